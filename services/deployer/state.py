"""The deployer's process state, built by the lifespan: its one `Deployer` (the model-server
processes it runs and the rollout logic) and the start-up task that restores them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends

from services.deployer.rollout import Deployer
from services.deployer.settings import DeployerSettings
from shared.service_app import ServiceContext, get_context
from shared.tasks import cancel_and_wait


@dataclass
class DeployerState:
    deployer: Deployer
    restore_task: asyncio.Task[Any] | None = None


DeployerContext = ServiceContext[DeployerSettings, DeployerState]
DeployerContextDep = Annotated[DeployerContext, Depends(get_context)]


def create_state(context: DeployerContext) -> DeployerState:
    return DeployerState(deployer=Deployer(context, context.settings))


async def start(context: DeployerContext) -> None:
    launcher = context.state.deployer.processes.launcher
    if launcher is not None:
        launcher.start_in_background()  # warm by the time the first model is deployed
    if context.settings.restore_on_startup:
        # In the background: restarting servers takes seconds each and must not hold up
        # readiness or the event consumers.
        context.state.restore_task = asyncio.create_task(
            context.state.deployer.restore(), name="deployer-restore"
        )


async def stop(context: DeployerContext) -> None:
    task = context.state.restore_task
    if task is not None:
        await cancel_and_wait([task])
    await context.state.deployer.close()
