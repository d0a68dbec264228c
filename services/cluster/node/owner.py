"""The service process a node follows. A node outlives a crash of the cluster service that
started it, so training goes on while that service restarts; the restarted service adopts
the node (`nodes.{node_id}.adopt`), and a node no service adopts within its grace leaves."""

from __future__ import annotations

import logging
import time

import psutil

logger = logging.getLogger("nexus.node")


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class Owner:
    """The owning service process, pinned by pid and start time (pids are reused)."""

    def __init__(self, pid: int, grace_s: float) -> None:
        self._process = _process(pid)
        self._grace_s = grace_s
        self._orphaned_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        process = self._process
        try:
            return process is not None and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def adopt(self, pid: int) -> bool:
        """Follow `pid` from now on; False when no such process runs here."""
        process = _process(pid)
        if process is None:
            return False
        self._process = process
        if self._orphaned_at is not None:
            logger.info("adopted by service process %d", pid)
        self._orphaned_at = None
        return True

    def given_up(self) -> bool:
        """True once the owner has been gone for longer than the grace (logs the moments)."""
        if self.alive():
            return False
        now = time.monotonic()
        if self._orphaned_at is None:
            self._orphaned_at = now
            logger.warning(
                "service process %s is gone; going on for up to %.0f s for a restarted one "
                "to adopt this node",
                self.pid,
                self._grace_s,
            )
            return False
        if now - self._orphaned_at > self._grace_s:
            logger.warning("no service adopted this node within %.0f s; stopping", self._grace_s)
            return True
        return False
