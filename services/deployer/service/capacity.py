"""How many model servers this host runs (the processes of this deployer), and how many one
tenant may serve at once (its deployment records). Checked under one advisory lock when a
deployment is created, so concurrent rollouts cannot pass a limit together; a new version
of a served name replaces it and needs no more room."""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil
from sqlalchemy.ext.asyncio import AsyncSession

from services.deployer.repository import count_serving
from services.deployer.settings import DeployerSettings
from shared.db import advisory_lock
from shared.errors import TooManyRequests

# A model server with torch imported and a small model loaded.
MODEL_SERVER_MEMORY_MB = 300
MODEL_SERVERS_PER_CORE = 4
MODEL_SERVER_MEMORY_SHARE = 0.25  # node processes and the services need the rest


def model_server_capacity(settings: DeployerSettings) -> int:
    if settings.max_model_servers:
        return settings.max_model_servers
    memory = psutil.virtual_memory().total * MODEL_SERVER_MEMORY_SHARE
    by_memory = memory / (MODEL_SERVER_MEMORY_MB * 2**20)
    return max(2, int(min(by_memory, (os.cpu_count() or 1) * MODEL_SERVERS_PER_CORE)))


async def check_room(
    settings: DeployerSettings,
    session: AsyncSession,
    tenant_id: str,
    *,
    servers_held: Callable[[], int],
    replacing: bool,
) -> None:
    """Raise `TooManyRequests` naming the limit a new model server would pass. `servers_held`
    (this deployer's servers) is read last, with no wait before the caller reserves a port,
    so two rollouts in this process cannot both take the last place."""
    await advisory_lock(session, "deployer.capacity")
    if replacing:
        return
    serving = await count_serving(session, tenant_id)
    if serving + 1 > settings.tenant_max_deployments:
        raise TooManyRequests(
            f"quota 'deployments' exceeded: the tenant serves {serving} deployments, its "
            f"quota is {settings.tenant_max_deployments} (NEXUS_TENANT_MAX_DEPLOYMENTS)"
        )
    on_host, capacity = servers_held(), model_server_capacity(settings)
    if on_host + 1 > capacity:
        raise TooManyRequests(
            f"this host serves {on_host} models, as many as it holds (NEXUS_MAX_MODEL_SERVERS "
            f"is {capacity}); stop a deployment first"
        )
