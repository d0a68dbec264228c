"""Rollouts through the deployer's own functions: register -> start -> smoke -> running,
replacing a version, rolling back, failing safely, and restoring after a restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from services.deployer.repository import DeployerRepository
from services.deployer.rollout import Deployer
from services.deployer.service.smoke import held_out_rows
from tests.infrastructure import free_port
from tests.services.deployer.conftest import SEED, DeployerHarness, deployer_settings

pytestmark = pytest.mark.usefixtures("stop_tenant_deployments")


async def ended(pid: int) -> bool:
    """The process is gone, or a zombie its parent (the fork server, for a forked model
    server) has yet to reap: it ran no more. Looked at for a few seconds."""
    for _ in range(100):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.05)
    return False


async def answers_correctly(url: str, headers: dict[str, str]) -> bool:
    rows = held_out_rows("digits", SEED, 20)
    async with httpx.AsyncClient(trust_env=False, headers=headers) as client:
        response = await client.post(f"{url}/predict", json={"rows": rows.rows})
    predictions = response.json()["predictions"]
    return sum(p == y for p, y in zip(predictions, rows.labels, strict=True)) >= 18


async def test_versions_replace_each_other_fail_safely_and_roll_back(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path, corrupt_model_dir: Path
) -> None:
    deployer = harness.deployer
    v1 = await harness.register(tenant_id, digits_model_dir, "digits")
    first = await deployer.deploy(tenant_id, v1.id)
    assert first.succeeded, first.reason
    assert first.deployment.status == "running" and first.deployment.pid
    assert psutil.pid_exists(first.deployment.pid)
    checks = first.deployment.checks or {}
    assert checks["predict"]["rows"] == 270 and checks["predict"]["accuracy"] >= 0.85
    assert checks["health"] == checks["docs"] == checks["refuses_bad_rows"] == "ok"
    assert await answers_correctly(str(first.deployment.url), harness.headers(tenant_id))

    # A version whose weights do not load ends failed; the live one is not touched.
    v2 = await harness.register(tenant_id, corrupt_model_dir, "digits")
    assert v2.version == v1.version + 1
    bad = await deployer.deploy(tenant_id, v2.id)
    assert not bad.succeeded
    assert bad.deployment.status == "failed" and bad.deployment.pid is None
    assert "does not match its checksum" in (bad.reason or "")
    assert not deployer.processes.is_running(bad.deployment.id)
    still, _ = await deployer.lookup(tenant_id, first.deployment.id)
    assert still.status == "running" and still.pid == first.deployment.pid
    assert await answers_correctly(str(still.url), harness.headers(tenant_id))

    # A good version starts beside the live one, then retires it.
    v3 = await harness.register(tenant_id, digits_model_dir, "digits")
    third = await deployer.deploy(tenant_id, v3.id)
    assert third.succeeded, third.reason
    assert third.deployment.previous_deployment_id == first.deployment.id
    assert third.deployment.port != first.deployment.port
    retired, _ = await deployer.lookup(tenant_id, first.deployment.id)
    assert retired.status == "stopped" and retired.pid is None
    assert await ended(first.deployment.pid)

    # Rolling back serves the first again, on the port clients already use.
    revived = await deployer.rollback(tenant_id, third.deployment.id)
    assert revived.id == first.deployment.id and revived.status == "running"
    assert revived.port == third.deployment.port
    assert await answers_correctly(str(revived.url), harness.headers(tenant_id))
    rolled_back, _ = await deployer.lookup(tenant_id, third.deployment.id)
    assert rolled_back.status == "rolled_back" and rolled_back.pid is None


async def test_a_failing_version_on_the_same_fixed_port_brings_the_previous_back(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path, tmp_path: Path
) -> None:
    deployer = harness.deployer
    port = free_port()
    good_model = await harness.register(tenant_id, digits_model_dir, "fixed", port=port)
    good = await deployer.deploy(tenant_id, good_model.id)
    assert good.succeeded, good.reason
    assert good.deployment.port == port

    # The new version must take over the port, so the old one is stopped first; its files
    # are gone, so it fails, and the old one is started again on the same port.
    bad_model = await harness.register(tenant_id, tmp_path / "deleted", "fixed", port=port)
    bad = await deployer.deploy(tenant_id, bad_model.id)
    assert not bad.succeeded and bad.deployment.status == "failed"
    assert "no model files" in (bad.reason or "")
    back, _ = await deployer.lookup(tenant_id, good.deployment.id)
    assert back.status == "running" and back.port == port
    assert back.pid != good.deployment.pid  # restarted after giving up its port
    assert await answers_correctly(f"http://127.0.0.1:{port}", harness.headers(tenant_id))


async def test_restore_restarts_lost_servers_adopts_live_ones_and_fails_interrupted(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path
) -> None:
    deployer = harness.deployer
    model = await harness.register(tenant_id, digits_model_dir, "restored")
    outcome = await deployer.deploy(tenant_id, model.id)
    assert outcome.succeeded, outcome.reason
    deployment = outcome.deployment
    async with harness.context.unit_of_work() as uow:
        interrupted = await DeployerRepository(uow.session, tenant_id).create_deployment(
            model, None, None, None
        )

    # The server dies while the record says running (e.g. the machine restarted).
    await deployer.processes.stop(deployment.id)
    fates = await deployer.restore(tenant_id)
    assert fates == {str(deployment.id): "restarted", str(interrupted.id): "interrupted"}
    restarted, _ = await deployer.lookup(tenant_id, deployment.id)
    assert restarted.status == "running" and restarted.pid != deployment.pid
    assert await answers_correctly(str(restarted.url), harness.headers(tenant_id))
    failed, _ = await deployer.lookup(tenant_id, interrupted.id)
    assert failed.status == "failed" and "interrupted" in (failed.error or "")

    # A new deployer process finds the server still up and takes it over without a restart.
    successor = Deployer(harness.context, deployer_settings(harness.memory_url))
    try:
        assert await successor.restore(tenant_id) == {str(deployment.id): "adopted"}
        assert successor.processes.is_running(deployment.id)
        await successor.stop(tenant_id, deployment.id)
        await deployer.processes.stop(deployment.id)  # reap it: this test process started it
        assert await ended(restarted.pid or 0)
    finally:
        await successor.close()


async def test_unknown_model_is_not_found(harness: DeployerHarness, tenant_id: str) -> None:
    from shared.errors import NotFound

    with pytest.raises(NotFound):
        await harness.deployer.deploy(tenant_id, uuid.uuid4())


async def test_a_rollout_cut_short_by_a_dead_deployer_is_resumed_once(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path
) -> None:
    deployer = harness.deployer
    model = await harness.register(tenant_id, digits_model_dir, "cut-short")
    # Registered, then the deployer died: no deployment yet, the rollout is to be resumed.
    assert await deployer.unfinished_rollout(tenant_id, model.workflow_id) == model.id
    # Died with the deployment still starting: that one is marked interrupted first.
    async with harness.context.unit_of_work() as uow:
        cut = await DeployerRepository(uow.session, tenant_id).create_deployment(
            model, None, None, None
        )
    assert await deployer.unfinished_rollout(tenant_id, model.workflow_id) == model.id
    interrupted, _ = await deployer.lookup(tenant_id, cut.id)
    assert interrupted.status == "failed" and "interrupted" in (interrupted.error or "")
    # Once rolled out, there is nothing to resume; nor for a workflow with no model.
    outcome = await deployer.deploy(tenant_id, model.id)
    assert outcome.succeeded, outcome.reason
    assert await deployer.unfinished_rollout(tenant_id, model.workflow_id) is None
    assert await deployer.unfinished_rollout(tenant_id, uuid.uuid4()) is None
    await deployer.stop(tenant_id, outcome.deployment.id)


async def test_a_deployment_records_how_it_serves_and_its_latency_over_http(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path
) -> None:
    """The served runtime, precision and p99 over HTTP are measured before going live and
    kept with the deployment; int8 weights serve when the spec asks, judged by the gates."""
    deploy = {"precision": "int8"}
    model = await harness.register(tenant_id, digits_model_dir, "digits-int8", deploy=deploy)
    outcome = await harness.deployer.deploy(tenant_id, model.id)
    assert outcome.succeeded, outcome.reason
    checks = outcome.deployment.checks or {}
    assert checks["serving"]["precision"] == "int8"
    assert checks["serving"]["runtime"] == "onnxruntime-int8"
    assert {"torch", "onnxruntime-int8"} <= set(checks["serving"]["runtime_single_row_us"])
    assert checks["predict"]["accuracy"] >= 0.85 and checks["refuses_anonymous"] == "ok"
    latency = checks["latency"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_p99_ms"] == 100.0
    assert await answers_correctly(str(outcome.deployment.url), harness.headers(tenant_id))
    await harness.deployer.stop(tenant_id, outcome.deployment.id)


async def test_a_version_slower_than_its_latency_gate_over_http_is_not_deployed(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path
) -> None:
    gates = {"max_p99_latency_ms": 0.001}  # no request over HTTP is this fast
    model = await harness.register(tenant_id, digits_model_dir, "digits-slow", gates=gates)
    outcome = await harness.deployer.deploy(tenant_id, model.id)
    assert not outcome.succeeded and outcome.deployment.status == "failed"
    reason = outcome.reason or ""
    assert "served p99 latency is" in reason and "in 2 rounds" in reason
    assert "the gate allows 0.001 ms" in (outcome.reason or "")
