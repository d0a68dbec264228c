"""HTTP routes of the memory service: a versioned key-value store per tenant and namespace."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from services.memory.repository import MemoryRepository
from services.memory.schemas import (
    KEY_PATTERN,
    NAMESPACE_PATTERN,
    MemoryChangeOut,
    MemoryEntryOut,
    MemoryListOut,
    MemoryPut,
)
from services.memory.service import key_problem, value_problem
from services.memory.state import MemoryContextDep
from shared.errors import NexusError, NotFound, Unprocessable
from shared.security import CurrentPrincipal
from shared.service_app import UnitOfWorkDep

router = APIRouter(prefix="/memory", tags=["memory"])

Namespace = Annotated[str, Path(pattern=NAMESPACE_PATTERN, description="Usually a workflow id.")]
Key = Annotated[str, Path(pattern=KEY_PATTERN, description="A key such as neural/config.")]


def _repository(uow: UnitOfWorkDep, principal: CurrentPrincipal) -> MemoryRepository:
    return MemoryRepository(uow.session, principal.tenant_id)


# The caller's tenant's entries, inside the request's transaction.
RepositoryDep = Annotated[MemoryRepository, Depends(_repository)]


def _check_key(key: str) -> None:
    problem = key_problem(key)
    if problem is not None:
        raise Unprocessable([{"field": "key", "message": problem}])


@router.put("/{namespace}/{key:path}", response_model=MemoryEntryOut)
async def put_value(
    namespace: Namespace,
    key: Key,
    body: MemoryPut,
    context: MemoryContextDep,
    repository: RepositoryDep,
) -> MemoryEntryOut:
    """Store a JSON value under a key; each put makes a new version."""
    _check_key(key)
    problem = value_problem(body.value, context.settings.max_value_bytes)
    if problem is not None:
        raise NexusError(problem, error="payload_too_large", status_code=413)
    entry = await repository.put(namespace, key, body.value)
    return MemoryEntryOut.model_validate(entry, from_attributes=True)


@router.get("/{namespace}/{key:path}/history", response_model=list[MemoryChangeOut])
async def key_history(
    namespace: Namespace, key: Key, repository: RepositoryDep
) -> list[MemoryChangeOut]:
    """Every version of a key, oldest first (deletions included)."""
    changes = await repository.history(namespace, key)
    if not changes:
        raise NotFound(f"no key {key!r} in namespace {namespace!r}")
    return [MemoryChangeOut.model_validate(c, from_attributes=True) for c in changes]


@router.get("/{namespace}/{key:path}", response_model=MemoryEntryOut)
async def get_value(namespace: Namespace, key: Key, repository: RepositoryDep) -> MemoryEntryOut:
    """Read the current value of a key."""
    entry = await repository.get(namespace, key)
    if entry is None:
        raise NotFound(f"no key {key!r} in namespace {namespace!r}")
    return MemoryEntryOut.model_validate(entry, from_attributes=True)


@router.delete("/{namespace}/{key:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_value(namespace: Namespace, key: Key, repository: RepositoryDep) -> Response:
    """Delete a key (its history is kept)."""
    if not await repository.delete(namespace, key):
        raise NotFound(f"no key {key!r} in namespace {namespace!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{namespace}", response_model=MemoryListOut)
async def list_values(
    namespace: Namespace,
    repository: RepositoryDep,
    prefix: Annotated[str | None, Query(max_length=256)] = None,
    q: Annotated[str | None, Query(max_length=256, description="Substring of key or value")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> MemoryListOut:
    """List a namespace's keys, filtered by key prefix and/or a search string."""
    entries = await repository.search(namespace, prefix, q, limit)
    return MemoryListOut(
        namespace=namespace,
        entries=[MemoryEntryOut.model_validate(e, from_attributes=True) for e in entries],
    )
