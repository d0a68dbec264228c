"""Small pieces of plain ASGI middleware, shared by the ones every app has."""

from __future__ import annotations

from starlette.types import Message, Scope, Send


class ResponseStatus:
    """Wraps a request's `send` to learn the status code of its response: 500 until one
    starts (the app failed before answering)."""

    def __init__(self, send: Send) -> None:
        self.code = 500
        self._send = send

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.code = message["status"]
        await self._send(message)


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value by its lower-case name, as the ASGI scope holds it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
