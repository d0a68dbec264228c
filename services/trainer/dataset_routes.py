"""HTTP routes of the trainer's datasets: the built-in ones, and a tenant's own files —
uploaded or imported, checked and described on arrival, listed, shown and deleted."""

from __future__ import annotations

import asyncio
import posixpath
import uuid
from functools import lru_cache
from typing import Annotated, Any

import fsspec
from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import ValidationError

from services.trainer.dataset_schemas import (
    DatasetCatalogOut,
    DatasetOptions,
    DatasetOptionsQuery,
    ImportRequest,
    StoredDatasetOut,
    StoredDatasetSummary,
)
from services.trainer.dataset_upload import (
    PayloadTooLarge,
    ReceivedFile,
    copy_url,
    receive_multipart,
)
from services.trainer.models import StoredDataset
from services.trainer.repository import TrainerRepository
from services.trainer.schemas import DatasetOut
from services.trainer.state import TrainerContext, TrainerContextDep
from shared.dataset_files import FORMATS, DatasetFileError, DatasetSchema, Format, inspect_file
from shared.dataset_files.store import data_url, opener, write_schema
from shared.errors import Conflict, NexusError, NotFound, Unprocessable
from shared.security import CurrentPrincipal, Principal
from shared.service_app import UnitOfWorkDep

router = APIRouter(prefix="/datasets", tags=["datasets"])

DatasetId = Annotated[uuid.UUID, Path(description="A dataset id.")]
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
}

_UPLOAD_BODY = {
    "requestBody": {
        "description": "the file as the `file` part of multipart/form-data, or JSON "
        '{"url": ...} naming a file under one of the service\'s dataset_url_prefixes',
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {"schema": ImportRequest.model_json_schema()},
        },
    }
}


def _repository(uow: UnitOfWorkDep, principal: Principal) -> TrainerRepository:
    return TrainerRepository(uow.session, principal.tenant_id)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StoredDatasetOut,
    openapi_extra=_UPLOAD_BODY,
)
async def create_dataset(
    request: Request,
    options: DatasetOptionsQuery,
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    context: TrainerContextDep,
) -> StoredDatasetOut:
    """Upload a CSV, Parquet or NPZ file (or import one by URL): it is stored, checksummed and
    checked; its schema is inferred (or taken from the options) and returned. 422 says what is
    wrong with a file and where; 413 when it exceeds the size limit or the tenant's quota.
    Nothing is stored for a refused file."""
    repository = _repository(uow, principal)
    limit, reason = await _size_limit(repository, context)
    dataset_id = uuid.uuid4()
    location = context.artifacts.url(principal.tenant_id, "datasets", str(dataset_id))
    try:
        received, source = await _receive(request, location, limit, reason, context)
        fmt = _format_of(options, received)
        schema = await _inspect(location, fmt, options)
        schema = schema.model_copy(update={"sha256": received.sha256})
        if (
            await repository.dataset_bytes() + received.size
            > context.settings.tenant_dataset_quota_bytes
        ):
            raise PayloadTooLarge(f"the file would exceed {_quota_text(context)}")
        await asyncio.to_thread(write_schema, location, schema)
        dataset = await repository.add_dataset(
            StoredDataset(
                id=dataset_id,
                name=options.name or _name_from(received.filename),
                format=fmt,
                location=location,
                source=source,
                size_bytes=received.size,
                sha256=received.sha256,
                schema=schema.model_dump(mode="json"),
            )
        )
    except BaseException:
        await asyncio.to_thread(_remove, location)
        raise
    return _out(dataset)


@router.get("", response_model=DatasetCatalogOut)
async def list_datasets(
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DatasetCatalogOut:
    """The built-in datasets, and the tenant's own (newest first)."""
    builtin = await asyncio.to_thread(_builtin_datasets)
    stored = await _repository(uow, principal).list_datasets(limit)
    return DatasetCatalogOut(
        datasets=[DatasetOut.model_validate(d) for d in builtin],
        uploaded=[_summary(d) for d in stored],
    )


@router.get("/{dataset_id}", response_model=StoredDatasetOut)
async def get_dataset(
    dataset_id: DatasetId, uow: UnitOfWorkDep, principal: CurrentPrincipal
) -> StoredDatasetOut:
    """One of the tenant's datasets: where it is stored, its checksum, schema, statistics and
    a preview of its first rows."""
    return _out(await _dataset(_repository(uow, principal), dataset_id))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(
    dataset_id: DatasetId, uow: UnitOfWorkDep, principal: CurrentPrincipal
) -> Response:
    """Delete a dataset and its file; 409 while a training job is still reading it."""
    repository = _repository(uow, principal)
    dataset = await _dataset(repository, dataset_id)
    training = await repository.unfinished_jobs_training_on(dataset.location)
    if training:
        raise Conflict(f"{training} unfinished training job(s) train on dataset {dataset_id}")
    await repository.delete_dataset(dataset)
    await asyncio.to_thread(_remove, dataset.location)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _dataset(repository: TrainerRepository, dataset_id: uuid.UUID) -> StoredDataset:
    dataset = await repository.get_dataset(dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return dataset


async def _size_limit(repository: TrainerRepository, context: TrainerContext) -> tuple[int, str]:
    settings = context.settings
    room = settings.tenant_dataset_quota_bytes - await repository.dataset_bytes()
    if room <= 0:
        raise PayloadTooLarge(f"no room left in {_quota_text(context)}: delete a dataset first")
    if room < settings.dataset_max_bytes:
        return room, f"the {room} bytes left in {_quota_text(context)}"
    return settings.dataset_max_bytes, f"the {settings.dataset_max_bytes}-byte limit per file"


def _quota_text(context: TrainerContext) -> str:
    return f"the tenant's {context.settings.tenant_dataset_quota_bytes}-byte dataset quota"


async def _receive(
    request: Request, location: str, limit: int, reason: str, context: TrainerContext
) -> tuple[ReceivedFile, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await receive_multipart(request, data_url(location), limit, reason), "upload"
    if content_type == "application/json":
        try:
            body = ImportRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise Unprocessable(f"the import body must be {{'url': ...}}: {exc}") from exc
        _check_importable(body.url, context)
        return await copy_url(body.url, data_url(location), limit, reason), body.url
    raise NexusError(
        f"content type {content_type or 'none'!r}: send multipart/form-data with a `file` "
        'part, or JSON {"url": ...}',
        error="unsupported_media_type",
        status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    )


def _check_importable(url: str, context: TrainerContext) -> None:
    """Only URLs under the operator's prefixes: the service never reads a path a tenant picks
    (another tenant's files, its own secrets) or fetches an arbitrary address for them."""
    normalized = posixpath.normpath(url.split("://", 1)[1]) if "://" in url else None
    allowed = context.settings.dataset_url_prefixes
    if normalized is None or not any(
        url.startswith(prefix) and f"{url.split('://', 1)[0]}://{normalized}".startswith(prefix)
        for prefix in allowed
    ):
        configured = ", ".join(allowed) if allowed else "none are configured"
        raise Unprocessable(
            f"datasets are imported only from URLs under NEXUS_DATASET_URL_PREFIXES "
            f"({configured}); upload the file instead"
        )


def _format_of(options: DatasetOptions, received: ReceivedFile) -> Format:
    if options.format is not None:
        return options.format
    extension = posixpath.splitext((received.filename or "").lower())[1]
    if extension in _EXTENSIONS:
        return _EXTENSIONS[extension]
    raise Unprocessable(
        f"cannot tell the format of {received.filename or 'the upload'!r}: name it *.csv, "
        f"*.parquet or *.npz, or pass format (one of {', '.join(FORMATS)})"
    )


async def _inspect(location: str, fmt: Format, options: DatasetOptions) -> DatasetSchema:
    try:
        return await asyncio.to_thread(
            inspect_file,
            opener(data_url(location)),
            fmt,
            target=options.target,
            task=options.task,
            features=options.feature_list(),
            categorical=options.categorical_list(),
            delimiter=options.delimiter,
        )
    except DatasetFileError as exc:
        raise Unprocessable(exc.to_detail(), error="invalid_dataset") from exc


def _name_from(filename: str | None) -> str:
    stem = posixpath.splitext(posixpath.basename(filename or ""))[0]
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in stem).strip("-._")
    return cleaned[:100] or "dataset"


def _remove(location: str) -> None:
    fs, path = fsspec.core.url_to_fs(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _summary(dataset: StoredDataset) -> StoredDatasetSummary:
    schema = DatasetSchema.model_validate(dataset.schema)
    return StoredDatasetSummary(
        id=dataset.id,
        name=dataset.name,
        format=schema.format,
        task=schema.task,
        rows=schema.rows,
        features=len(schema.features),
        classes=schema.num_classes,
        size_bytes=dataset.size_bytes,
        created_at=dataset.created_at,
    )


def _out(dataset: StoredDataset) -> StoredDatasetOut:
    return StoredDatasetOut(
        id=dataset.id,
        name=dataset.name,
        format=dataset.format,  # type: ignore[arg-type]
        source=dataset.source,
        location=dataset.location,
        size_bytes=dataset.size_bytes,
        sha256=dataset.sha256,
        created_at=dataset.created_at,
        dataset_schema=DatasetSchema.model_validate(dataset.schema),
    )


@lru_cache(maxsize=1)
def _builtin_datasets() -> list[dict[str, Any]]:
    # Imported on first use: it loads scikit-learn, which the rest of this process never needs.
    from shared.ml.data import BUNDLED_DATASETS, describe_dataset

    return [describe_dataset(name) for name in sorted(BUNDLED_DATASETS)]
