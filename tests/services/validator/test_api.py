"""The validator's HTTP API: tenant-scoped reads, re-runs, and bad input refused with a 4xx
naming the field while stored validations stay as they were."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from services.validator.repository import ValidationRepository
from services.validator.service.nodes import ClusterUnreachable, find_validator
from tests.services.validator.conftest import DIGITS_SPEC
from tests.support import as_service


async def store_phase_validation(
    context: Any, tenant_id: str, status: str = "passed", cluster_id: uuid.UUID | None = None
) -> Any:
    """A phase 4 validation row as the event flow leaves it."""
    workflow_id = uuid.uuid4()
    async with context.unit_of_work() as uow:
        repository = ValidationRepository(uow.session, tenant_id)
        validation = await repository.create(
            workflow_id=workflow_id,
            cluster_id=cluster_id or uuid.uuid4(),
            trigger="phase",
            model_uri=context.artifacts.workflow_url(tenant_id, workflow_id, "neural/models"),
            spec=DIGITS_SPEC,
            gates={"min_accuracy": 0.85},
        )
        if status != "queued":
            await repository.finish(validation, status, results={"passed": status == "passed"})
    return validation


@pytest.fixture
def client(validator: tuple[httpx.AsyncClient, Any]) -> httpx.AsyncClient:
    return validator[0]


@pytest.fixture
def context(validator: tuple[httpx.AsyncClient, Any]) -> Any:
    return validator[1]


async def test_list_and_get_are_tenant_scoped(
    client: httpx.AsyncClient, context: Any, internal_token: str, tenant_id: str
) -> None:
    mine = await store_phase_validation(context, tenant_id)
    await store_phase_validation(context, tenant_id, status="failed")
    headers = as_service(internal_token, tenant_id)

    listed = await client.get("/validations", headers=headers)
    assert listed.status_code == 200 and len(listed.json()["validations"]) == 2
    by_workflow = await client.get(
        "/validations", params={"workflow_id": str(mine.workflow_id)}, headers=headers
    )
    assert [v["id"] for v in by_workflow.json()["validations"]] == [str(mine.id)]
    failed = await client.get("/validations", params={"status": "failed"}, headers=headers)
    assert [v["status"] for v in failed.json()["validations"]] == ["failed"]

    got = await client.get(f"/validations/{mine.id}", headers=headers)
    assert got.json()["status"] == "passed" and got.json()["trigger"] == "phase"
    other = as_service(internal_token, "someone-else")
    assert (await client.get(f"/validations/{mine.id}", headers=other)).status_code == 404
    assert (await client.get("/validations", headers=other)).json()["validations"] == []


async def test_report_of_an_open_validation_is_a_conflict(
    client: httpx.AsyncClient, context: Any, internal_token: str, tenant_id: str
) -> None:
    queued = await store_phase_validation(context, tenant_id, status="queued")
    response = await client.get(
        f"/validations/{queued.id}/report", headers=as_service(internal_token, tenant_id)
    )
    assert response.status_code == 409 and response.json()["error"] == "conflict"


async def test_rerun_refused_while_one_is_open(
    client: httpx.AsyncClient, context: Any, internal_token: str, tenant_id: str
) -> None:
    queued = await store_phase_validation(context, tenant_id, status="queued")
    response = await client.post(
        "/validations",
        json={"workflow_id": str(queued.workflow_id)},
        headers=as_service(internal_token, tenant_id),
    )
    assert response.status_code == 409 and "in progress" in response.json()["detail"]


async def test_rerun_without_a_validator_node_is_a_conflict(
    client: httpx.AsyncClient, context: Any, internal_token: str, tenant_id: str
) -> None:
    # The cluster is unknown to the cluster service (released after the workflow ended).
    done = await store_phase_validation(context, tenant_id)
    headers = as_service(internal_token, tenant_id)
    response = await client.post(
        "/validations", json={"workflow_id": str(done.workflow_id)}, headers=headers
    )
    assert response.status_code == 409 and "not found" in response.json()["detail"]
    listed = await client.get(
        "/validations", params={"workflow_id": str(done.workflow_id)}, headers=headers
    )
    assert len(listed.json()["validations"]) == 1  # nothing was stored for the refusal


async def test_an_unreachable_cluster_service_is_asked_again_then_reported(
    tenant_id: str,
) -> None:
    attempts = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("connection refused", request=request)

    class Unreachable:
        class settings:  # noqa: N801 - mimics ServiceContext.settings
            cluster_url = "http://cluster.invalid"
            internal_token = None

            @staticmethod
            def internal_token_value() -> str:
                return "token"

        http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))

    context: Any = Unreachable()
    # A route asks once; the event path keeps asking while the service may be restarting.
    with pytest.raises(ClusterUnreachable, match="unreachable"):
        await find_validator(context, tenant_id, uuid.uuid4(), patience_s=0)
    assert attempts == 1
    with pytest.raises(ClusterUnreachable, match="unreachable"):
        await find_validator(context, tenant_id, uuid.uuid4(), patience_s=1.0)
    assert attempts >= 1 + 3
    await Unreachable.http.aclose()


def _bad_requests(workflow: str, prefix: str) -> list[tuple[str, str, Any, int, str | None]]:
    return [
        ("post", "/validations", {}, 422, "workflow_id"),
        ("post", "/validations", {"workflow_id": "not-a-uuid"}, 422, "workflow_id"),
        ("post", "/validations", {"workflow_id": workflow, "extra": 1}, 422, "extra"),
        ("post", "/validations", "not json", 422, None),
        ("post", "/validations", {"workflow_id": str(uuid.uuid4())}, 404, None),
        ("post", "/validations", {"workflow_id": workflow, "model_uri": ""}, 422, "model_uri"),
        (
            "post",
            "/validations",
            {"workflow_id": workflow, "model_uri": "file:///etc/models"},
            422,
            "model_uri",
        ),
        (
            "post",
            "/validations",
            {"workflow_id": workflow, "model_uri": f"{prefix}/../other/neural/models"},
            422,
            "model_uri",
        ),
        (
            "post",
            "/validations",
            {"workflow_id": workflow, "model_uri": f"{prefix}/neural/missing"},
            422,
            "model_uri",
        ),
        ("get", "/validations/not-a-uuid", None, 422, "path.validation_id"),
        ("get", f"/validations/{uuid.uuid4()}", None, 404, None),
        ("get", f"/validations/{uuid.uuid4()}/report", None, 404, None),
        ("get", "/validations?status=bogus", None, 422, "query.status"),
        ("get", "/validations?limit=0", None, 422, "query.limit"),
        ("get", "/validations?workflow_id=nope", None, 422, "query.workflow_id"),
    ]


async def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, context: Any, internal_token: str, tenant_id: str
) -> None:
    kept = await store_phase_validation(context, tenant_id)
    headers = as_service(internal_token, tenant_id)
    before = (await client.get(f"/validations/{kept.id}", headers=headers)).json()
    prefix = context.artifacts.workflow_url(tenant_id, kept.workflow_id)
    for method, path, body, status, field in _bad_requests(str(kept.workflow_id), prefix):
        kwargs = {"content": body} if isinstance(body, str) else {"json": body}
        response = await client.request(method.upper(), path, headers=headers, **kwargs)
        assert response.status_code == status, (path, body, response.text)
        assert set(response.json()) == {"error", "detail"}
        if field is not None:
            assert field in str(response.json()["detail"]), (path, body, response.text)
    assert (await client.get(f"/validations/{kept.id}", headers=headers)).json() == before
    listed = await client.get("/validations", headers=headers)
    assert [v["id"] for v in listed.json()["validations"]] == [str(kept.id)]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}]
)
async def test_requests_without_valid_credentials_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, path in (("GET", "/validations"), ("POST", "/validations")):
        response = await client.request(method, path, headers=headers, json={})
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "nats": "ok"}
    assert "nexus_http_requests_total" in (await client.get("/metrics")).text
