"""The artifact store: an fsspec URL (`NEXUS_ARTIFACTS`) under which every workflow's
generated project and model live, at `{tenant}/{workflow_id}/...`."""

from __future__ import annotations

import posixpath
from typing import Any

import fsspec


class ArtifactStore:
    def __init__(self, root_url: str) -> None:
        self.root_url = root_url.rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root_url)

    def url(self, *parts: str) -> str:
        return "/".join([self.root_url, *[p.strip("/") for p in parts]])

    def path(self, *parts: str) -> str:
        """The store-local path (for a file:// store, a filesystem path)."""
        return posixpath.join(self._root_path, *[p.strip("/") for p in parts])

    def workflow_url(self, tenant_id: str, workflow_id: object, *parts: str) -> str:
        return self.url(tenant_id, str(workflow_id), *parts)

    def write_text(self, url: str, text: str) -> None:
        self.write_bytes(url, text.encode())

    def write_bytes(self, url: str, data: bytes) -> None:
        fs, path = fsspec.core.url_to_fs(url)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)

    def read_text(self, url: str) -> str:
        return self.read_bytes(url).decode()

    def read_bytes(self, url: str) -> bytes:
        fs, path = fsspec.core.url_to_fs(url)
        with fs.open(path, "rb") as f:
            data: bytes = f.read()
        return data

    def exists(self, url: str) -> bool:
        fs, path = fsspec.core.url_to_fs(url)
        return bool(fs.exists(path))

    def list_files(self, url: str) -> list[str]:
        """Every file under `url`, as paths relative to it."""
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(path):
            return []
        found: list[Any] = fs.find(path)
        return sorted(posixpath.relpath(p, path) for p in found)


def local_path(url: str) -> str:
    """A filesystem path for a file:// URL (model servers and scripts read files directly)."""
    if url.startswith("file://"):
        return url[len("file://") :]
    if "://" in url:
        raise ValueError(f"not a local artifact URL: {url}")
    return url
