"""Dataset bytes into the artifact store: a multipart upload read as it arrives, or a copy of
an allowed URL. Either is counted and checksummed on the way and stopped at its size limit,
so a file too large never fills the disk."""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import Request

from shared.errors import NexusError, Unprocessable

# Written to the store in pieces of about this size, each off the event loop.
_WRITE_BYTES = 1 << 20
# A multipart body carries boundaries and part headers beside the file itself.
_MULTIPART_OVERHEAD_BYTES = 64 * 1024


class PayloadTooLarge(NexusError):
    status_code = 413
    error = "payload_too_large"


@dataclass
class ReceivedFile:
    size: int = 0
    filename: str | None = None
    _digest: Any = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> str:
        return str(self._digest.hexdigest())


class _Sink:
    """One file being written to the store, refused past `limit` bytes."""

    def __init__(self, url: str, limit: int, limit_reason: str) -> None:
        fs, path = fsspec.core.url_to_fs(url)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self._file: IO[bytes] = fs.open(path, "wb")
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.limit, self.limit_reason = limit, limit_reason
        self.received = ReceivedFile()

    def take(self, data: bytes) -> None:
        self.received.size += len(data)
        if self.received.size > self.limit:
            raise PayloadTooLarge(f"the file is larger than {self.limit_reason}")
        self.received._digest.update(data)
        self._pending.append(data)
        self._pending_bytes += len(data)

    async def flush(self, force: bool = False) -> None:
        if self._pending and (force or self._pending_bytes >= _WRITE_BYTES):
            data, self._pending, self._pending_bytes = b"".join(self._pending), [], 0
            await asyncio.to_thread(self._file.write, data)

    async def close(self) -> ReceivedFile:
        await self.flush(force=True)
        await asyncio.to_thread(self._file.close)
        return self.received

    def abandon(self) -> None:
        self._file.close()


async def receive_multipart(
    request: Request, url: str, limit: int, limit_reason: str
) -> ReceivedFile:
    """The one file part (`file`) of a multipart/form-data request, stored at `url`."""
    _, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if not boundary:
        raise Unprocessable("multipart/form-data without a boundary")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"the upload ({int(declared)} bytes) is larger than {limit_reason}")
    sink = _Sink(url, limit, limit_reason)
    part = _PartReader(sink)
    parser = MultipartParser(boundary, part.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await sink.flush()
        parser.finalize()
    except MultipartParseError as exc:
        sink.abandon()
        raise Unprocessable(f"not a well-formed multipart body: {exc}") from exc
    except BaseException:
        sink.abandon()
        raise
    if not part.seen_file:
        sink.abandon()
        raise Unprocessable("the multipart body has no `file` part holding the dataset")
    received = await sink.close()
    received.filename = part.filename
    return received


async def copy_url(source: str, url: str, limit: int, limit_reason: str) -> ReceivedFile:
    """The file at `source` (any fsspec URL), copied to `url`."""
    sink = _Sink(url, limit, limit_reason)
    try:
        async for chunk in _read_chunks(source):
            sink.take(chunk)
            await sink.flush()
    except BaseException:
        sink.abandon()
        raise
    received = await sink.close()
    received.filename = posixpath.basename(source)
    return received


async def _read_chunks(source: str) -> AsyncIterator[bytes]:
    try:
        f = await asyncio.to_thread(fsspec.open(source, "rb").open)
    except (OSError, ValueError, ImportError) as exc:
        raise Unprocessable(f"cannot read {source}: {exc}") from exc
    try:
        while chunk := await asyncio.to_thread(f.read, _WRITE_BYTES):
            yield chunk
    finally:
        f.close()


class _PartReader:
    """Multipart callbacks: which part is arriving, and its data into the sink if it is the
    file. Any other part is refused (the options travel in the query string)."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.seen_file = False
        self.filename: str | None = None
        self._in_file = False
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._field,
            "on_header_value": self._value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
        }

    def _begin(self) -> None:
        self._disposition, self._in_file = b"", False

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode(errors="replace")
        if name != "file":
            raise Unprocessable(
                f"unexpected form field {name!r}: send the dataset as the `file` part and "
                "options (name, format, target, ...) in the query string"
            )
        if self.seen_file:
            raise Unprocessable("more than one `file` part: upload one dataset at a time")
        self.seen_file, self._in_file = True, True
        filename = options.get(b"filename")
        self.filename = filename.decode(errors="replace") if filename else None

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.sink.take(data[start:end])
