"""A spec that trains on a stored dataset: the dataset is looked up at the trainer for the
submitting tenant (or imported there from a URL), the spec records its location, and the spec
is checked again against the dataset's real shape before anything is created."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from pydantic import ValidationError

from services.cluster.state import ClusterContext
from shared.errors import NexusError, Unavailable, Unprocessable, describe_validation_errors
from shared.security import internal_headers
from shared.spec import SHAPE_CONTEXT, DatasetShape, WorkflowSpec, is_stored_dataset


async def resolve_dataset(
    spec: WorkflowSpec, tenant_id: str, context: ClusterContext
) -> WorkflowSpec:
    """`spec` as it will run: a built-in dataset unchanged; a stored one by its location and
    checked against its schema. 422 when the tenant has no such dataset or the spec does not
    fit it."""
    if not is_stored_dataset(spec.dataset):
        return spec
    dataset = await _find_or_import(spec.dataset, tenant_id, context)
    schema = dataset["schema"]
    input_shape = schema.get("input_shape")
    shape = DatasetShape(
        rows=schema["rows"],
        features=len(schema["features"]),
        classes=len(schema["class_names"]),
        task=schema["task"],
        input_shape=tuple(input_shape) if input_shape else None,
        categorical=tuple(
            (schema["features"].index(name), len(values))
            for name, values in schema.get("categories", {}).items()
        ),
    )
    body = spec.model_dump(mode="json", exclude_unset=True)
    body["dataset"] = dataset["location"]
    model = body.setdefault("model", {})
    # Images are laid out as uploaded unless the spec says otherwise; an MLP reads them flat.
    if input_shape and model.get("type", "mlp") != "mlp" and "input_shape" not in model:
        model["input_shape"] = input_shape
    try:
        return WorkflowSpec.model_validate(body, context={SHAPE_CONTEXT: shape})
    except ValidationError as exc:
        errors = describe_validation_errors([dict(e) for e in exc.errors()])
        raise Unprocessable({"dataset": dataset["id"], "errors": errors}) from exc


async def _find_or_import(reference: str, tenant_id: str, context: ClusterContext) -> Any:
    dataset_id = _stored_id(reference, tenant_id, context)
    if dataset_id is not None:
        return await _trainer(context, tenant_id, "GET", f"/datasets/{dataset_id}")
    # Any other URL is imported (the trainer allows only its configured prefixes).
    return await _trainer(context, tenant_id, "POST", "/datasets", json={"url": reference})


def _stored_id(reference: str, tenant_id: str, context: ClusterContext) -> str | None:
    """The dataset id of an id, or of a location in the artifact store (as a stored spec or
    a retry names it); None for a URL elsewhere."""
    try:
        return str(uuid.UUID(reference))
    except ValueError:
        pass
    mine = context.artifacts.url(tenant_id, "datasets") + "/"
    if reference.startswith(mine):
        return reference[len(mine) :].strip("/")
    if reference.startswith(context.artifacts.root_url + "/"):
        # Another tenant's location, or none at all: answered as an unknown dataset.
        raise Unprocessable(f"dataset: no dataset at {reference}")
    return None


async def _trainer(
    context: ClusterContext, tenant_id: str, method: str, path: str, **kwargs: Any
) -> Any:
    url = context.settings.trainer_url.rstrip("/") + path
    headers = internal_headers(context.settings.internal_token_value(), tenant_id)
    try:
        answer = await context.http.request(method, url, headers=headers, timeout=600, **kwargs)
    except httpx.HTTPError as exc:
        raise Unavailable(f"the trainer service could not be reached: {exc!r}") from exc
    if answer.status_code in (200, 201):
        return answer.json()
    detail = _detail(answer)
    if answer.status_code in (404, 413, 415, 422):
        raise Unprocessable({"dataset": detail})
    raise NexusError(f"the trainer answered {answer.status_code}: {detail}", status_code=502)


def _detail(answer: httpx.Response) -> Any:
    try:
        return answer.json().get("detail", answer.text)
    except ValueError:
        return answer.text
