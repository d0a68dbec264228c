"""The generated project of a workflow as one tar.gz (`GET /workflows/{id}/bundle`)."""

from __future__ import annotations

import io
import tarfile
import time
import uuid

from shared.artifacts import ArtifactStore
from shared.project_layout import PROJECT_FOLDER


def build_bundle(store: ArtifactStore, tenant_id: str, workflow_id: uuid.UUID) -> bytes | None:
    """The workflow's `neural/` folder as a gzipped tarball, or None when it has no files.
    Blocking (reads every file): run it in a thread."""
    base = store.workflow_url(tenant_id, workflow_id, PROJECT_FOLDER)
    files = store.list_files(base)
    if not files:
        return None
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for relative in files:
            data = store.read_bytes(f"{base}/{relative}")
            info = tarfile.TarInfo(f"{PROJECT_FOLDER}/{relative}")
            info.size, info.mtime = len(data), now
            # Generated scripts run as they are (`./deploy.sh`, `python train.py`).
            info.mode = 0o755 if relative.startswith("scripts/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
