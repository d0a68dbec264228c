"""Background tasks end when stopped, even one that absorbs a cancellation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.tasks import cancel_and_wait


async def _absorbs_first_cancel(absorbed: asyncio.Event) -> None:
    """Like a loop whose awaited library swallowed one CancelledError, then slept again."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        absorbed.set()
    await asyncio.sleep(3600)


async def test_a_task_that_absorbs_a_cancel_is_cancelled_again() -> None:
    absorbed = asyncio.Event()
    task = asyncio.create_task(_absorbs_first_cancel(absorbed))
    await asyncio.sleep(0)

    await asyncio.wait_for(cancel_and_wait([task], timeout_s=5), 3)

    assert absorbed.is_set() and task.cancelled()


async def test_a_task_that_never_ends_is_given_up_on_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    released = False

    async def stubborn() -> None:
        while not released:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="shared.tasks"):
        await asyncio.wait_for(cancel_and_wait([task], timeout_s=0.3), 3)

    assert not task.done()
    assert "stubborn-loop" in caplog.text
    released = True  # let it end, so the test leaves no task behind
    task.cancel()
    await asyncio.wait_for(task, 3)
