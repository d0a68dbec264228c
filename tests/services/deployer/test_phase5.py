"""Phase 5 end to end through NATS: a Phase4Passed event in, a served model, the project
files and memory keys, and Phase5Completed (or PhaseFailed) out."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from services.deployer.handlers import deploy_validated_model
from services.deployer.repository import DeployerRepository
from shared.artifacts import local_path
from shared.bus import publish_event
from shared.contracts import Phase4Passed
from tests.infrastructure import free_port
from tests.services.deployer.conftest import SEED, DeployerHarness
from tests.support import memory_keys

pytestmark = pytest.mark.usefixtures("stop_tenant_deployments")

PHASE5_KEYS = (
    "neural/deployment-ready",
    "neural/dockerfile",
    "neural/serve-api",
    "neural/deploy-script",
    "neural/phase5-complete",
    "neural/workflow-complete",
)


class Phase5Outcomes:
    """Collects phase 5 events from NATS (core subscription: JetStream publishes reach it)."""

    def __init__(self) -> None:
        self.received: dict[str, asyncio.Future[tuple[str, dict[str, Any]]]] = {}

    def expect(self, workflow_id: uuid.UUID) -> asyncio.Future[tuple[str, dict[str, Any]]]:
        return self.received.setdefault(
            str(workflow_id), asyncio.get_running_loop().create_future()
        )

    async def on_message(self, msg: Any) -> None:
        data = json.loads(msg.data)
        future = self.received.get(data.get("workflow_id", ""))
        if future is not None and not future.done():
            future.set_result((msg.subject, data))


@pytest.fixture
async def outcomes(nats_url: str) -> AsyncIterator[Phase5Outcomes]:
    collected = Phase5Outcomes()
    connection = await nats.connect(nats_url)
    await connection.subscribe("nexus.phase5.>", cb=collected.on_message)
    yield collected
    await connection.close()


def phase4_passed(tenant_id: str, model_uri: str) -> Phase4Passed:
    return Phase4Passed(
        workflow_id=uuid.uuid4(),
        tenant_id=tenant_id,
        validation_id=uuid.uuid4(),
        model_uri=model_uri,
        metrics={"test_accuracy": 0.95},
        spec={"name": f"digits-{tenant_id}", "dataset": "digits", "training": {"seed": SEED}},
    )


async def test_phase4_passed_serves_the_model_and_completes_phase5(
    harness: DeployerHarness,
    tenant_id: str,
    digits_model_dir: Path,
    outcomes: Phase5Outcomes,
    tmp_path: Path,
) -> None:
    context = harness.context
    workflow_id = uuid.uuid4()
    models_url = context.artifacts.workflow_url(tenant_id, workflow_id, "neural/models")
    shutil.copytree(digits_model_dir, local_path(models_url))
    event = phase4_passed(tenant_id, models_url).model_copy(update={"workflow_id": workflow_id})

    arrived = outcomes.expect(workflow_id)
    await publish_event(context.broker, event)
    subject, completed = await asyncio.wait_for(arrived, 180)

    assert subject == "nexus.phase5.completed", completed
    served_url = completed["served_url"]
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(f"{served_url}/healthz")).status_code == 200
    values = await memory_keys(
        harness.memory_url, harness.headers(tenant_id), workflow_id, set(PHASE5_KEYS)
    )
    assert values["neural/deployment-ready"]["url"] == served_url
    assert values["neural/deployment-ready"]["model_id"] == completed["model_id"]
    assert values["neural/deployment-ready"]["version"] == 1
    assert values["neural/workflow-complete"]["served_url"] == served_url
    assert values["neural/phase5-complete"]["gates"] == {
        "api_answers": True,
        "health_passes": True,
        "docs_present": True,
    }
    assert values["neural/phase5-complete"]["smoke_test"]["accuracy"] >= 0.85
    example = values["neural/serve-api"]["example"]

    project = Path(local_path(context.artifacts.workflow_url(tenant_id, workflow_id, "neural")))
    docs = (project / "docs" / "DEPLOYMENT.md").read_text()
    assert served_url in docs and json.dumps(example["request"], separators=(",", ":")) in docs
    dockerfile = (project / "Dockerfile").read_text()
    assert dockerfile.startswith("# The digits-") and "FROM python:3.11-slim" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert values["neural/dockerfile"]["uri"].endswith("neural/Dockerfile")
    deploy_script = project / "scripts" / "deploy.sh"
    assert os.access(deploy_script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(deploy_script)], check=False).returncode == 0

    # The generated deploy.sh really serves the model (here without Docker: via serve.py).
    await assert_deploy_script_serves(deploy_script, example, project / "deploy.log")
    # And the project alone does, in a new virtualenv with only its requirements.txt.
    await assert_the_bundle_serves_alone(project, example, tmp_path)

    # A redelivered event is recognised and deploys nothing twice.
    await deploy_validated_model(context, event)
    async with context.unit_of_work() as uow:
        models = await DeployerRepository(uow.session, tenant_id).list_models(None, 10)
    assert len(models) == 1


async def assert_the_bundle_serves_alone(
    project: Path, example: dict[str, Any], scratch: Path
) -> None:
    """serve.py in a fresh virtualenv holding only requirements.txt (no Nexus, no torch), run
    in isolated mode from a copy of the project: it answers as the Nexus server did."""
    copy = shutil.copytree(project, scratch / "project")
    venv = scratch / "venv"
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}

    async def run(*argv: str) -> str:
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=scratch
        )
        output, _ = await asyncio.wait_for(process.communicate(), 300)
        assert process.returncode == 0, output.decode()[-3000:]
        return output.decode()

    await run(sys.executable, "-m", "venv", str(venv))
    await run(str(python), "-m", "pip", "install", "-q", "-r", str(copy / "requirements.txt"))
    for absent in ("torch", "services", "shared"):
        look = f"import importlib.util as u; print(u.find_spec('{absent}'))"
        found = await run(str(python), "-I", "-c", look)
        assert found.strip() == "None", f"{absent} is in the bundle's venv"

    port, key = free_port(), "bundle-key"
    log = scratch / "serve.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(python), "-I", str(copy / "scripts" / "serve.py"), "--port", str(port),
            env={**env, "SERVE_API_KEY": key}, stdout=out, stderr=subprocess.STDOUT, cwd=scratch,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(trust_env=False, base_url=url) as client:
            for _ in range(300):
                assert process.returncode is None, log.read_text()
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            request = example["request"]
            assert (await client.post("/predict", json=request)).status_code == 401
            bearer = {"Authorization": f"Bearer {key}"}
            answer = (await client.post("/predict", json=request, headers=bearer)).json()
            short = {"rows": [request["rows"][0][:-1]]}
            refused = await client.post("/predict", json=short, headers=bearer)
        assert answer["predictions"] == example["response"]["predictions"]
        assert answer["labels"] == example["response"]["labels"]
        for served, expected in zip(
            answer["probabilities"], example["response"]["probabilities"], strict=True
        ):
            assert max(abs(a - b) for a, b in zip(served, expected, strict=True)) < 1e-3
        assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "rows.0"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)


async def assert_deploy_script_serves(script: Path, example: dict[str, Any], log: Path) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PATH": "/usr/bin:/bin"}  # no docker on PATH
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            "bash", str(script), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(600):
                assert process.returncode is None, log.read_text()
                try:
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            answer = (await client.post(f"{url}/predict", json=example["request"])).json()
        assert answer["predictions"] == example["response"]["predictions"]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)


async def test_a_model_that_is_not_there_fails_phase5_with_the_reason(
    harness: DeployerHarness, tenant_id: str, outcomes: Phase5Outcomes, tmp_path: Path
) -> None:
    event = phase4_passed(tenant_id, (tmp_path / "nothing-here").as_uri())
    arrived = outcomes.expect(event.workflow_id)
    await publish_event(harness.context.broker, event)
    subject, failed = await asyncio.wait_for(arrived, 60)
    assert subject == "nexus.phase5.failed"
    assert failed["phase"] == 5 and "no model.safetensors" in failed["reason"]


async def test_an_event_with_an_invalid_spec_is_rejected_and_deploys_nothing(
    harness: DeployerHarness, tenant_id: str, outcomes: Phase5Outcomes, tmp_path: Path
) -> None:
    context = harness.context
    forged = phase4_passed(tenant_id, (tmp_path / "m").as_uri()).model_dump(mode="json")
    forged["spec"] = {**forged["spec"], "dataset": "imagenet"}
    await context.broker.publish(forged, Phase4Passed.subject, stream="NEXUS", timeout=10)
    # The next event is handled: the malformed one was rejected, not redelivered in a loop.
    following = phase4_passed(tenant_id, (tmp_path / "nothing-here").as_uri())
    arrived = outcomes.expect(following.workflow_id)
    await publish_event(context.broker, following)
    subject, _ = await asyncio.wait_for(arrived, 60)
    assert subject == "nexus.phase5.failed"
    async with context.unit_of_work() as uow:
        models = await DeployerRepository(uow.session, tenant_id).list_models(None, 10)
    assert models == []
