"""Stopping background tasks for certain.

One `task.cancel()` is a request, not a guarantee: a library awaited inside the task may
absorb the CancelledError (asyncio.wait_for on Python 3.11 does when its inner call finishes
in the same moment), and the task then runs on with nothing left to cancel it, so whoever
awaits it waits forever. Found so: a service's shutdown hung on its loss detector, which was
back at its sleep after one such cancel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

# How often a task still running is cancelled again.
RECANCEL_INTERVAL_S = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], timeout_s: float = 10.0) -> None:
    """Cancel `tasks` and wait for them to end, cancelling again any that ran on, for at
    most `timeout_s`; those still running then are logged and left behind."""
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            names = sorted(task.get_name() for task in pending)
            logger.error("tasks still running %.0fs after being cancelled: %s", timeout_s, names)
            return
        done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_INTERVAL_S, remaining))
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.warning("task %s ended with %r", task.get_name(), task.exception())
