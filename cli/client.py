"""HTTP client for the Nexus services, with the cached login and one token refresh on 401."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from cli.credentials import Credentials, load_credentials, save_credentials
from cli.stack.home import NexusHome
from cli.stack.services import service as service_named
from cli.stack.state import load_state


class CliError(Exception):
    """A failure worth one clear line to the user (and exit status 1)."""


class Unreachable(CliError):
    """No answer at all (refused, timed out); may pass, unlike an error the server gave."""


class ApiError(CliError):
    """A service answered 4xx/5xx; carries its `{"error", "detail"}` body."""

    def __init__(self, status: int, error: str, detail: Any, url: str):
        self.status, self.error, self.detail, self.url = status, error, detail, url
        super().__init__(f"{error}: {format_detail(detail)} (HTTP {status} from {url})")


def format_detail(detail: Any) -> str:
    """Flatten the services' validation lists ({"field", "message"}) into one readable line."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "message" in item:
                parts.append(f"{item.get('field', 'body')}: {item['message']}")
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict) and "message" in detail:
        # A refused dataset: what is wrong, then where (row, column, value, count).
        where = ", ".join(f"{k} {v}" for k, v in (detail.get("location") or {}).items())
        return f"{detail['message']}" + (f" [{where}]" if where else "")
    return "" if detail is None else str(detail)


def api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error") or response.reason_phrase
        detail = body.get("detail", "")
    else:
        error, detail = response.reason_phrase, response.text[:500]
    return ApiError(response.status_code, str(error), detail, str(response.request.url))


class NexusClient:
    def __init__(
        self, home: NexusHome, env: Mapping[str, str] | None = None, timeout: float = 30.0
    ):
        self.home = home
        self.env = os.environ if env is None else env
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> NexusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def base_url(self, name: str) -> str:
        """NEXUS_<NAME>_URL, else where the local stack under NEXUS_HOME runs it, else default."""
        svc = service_named(name)
        explicit = self.env.get(svc.url_var)
        if explicit:
            return explicit.rstrip("/")
        state = load_state(self.home)
        if state is not None and name in state.services:
            return state.services[name].rstrip("/")
        return svc.local_url(self.env)

    # -- transport ------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach {url} ({type(exc).__name__}); is the stack running? (`nexus up`)"
            ) from exc

    def request(self, method: str, url: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        """Send, refreshing the access token once on 401; raise ApiError on 4xx/5xx."""
        creds = self.credentials(required=auth) if auth else None
        headers = dict(kwargs.pop("headers", {}) or {})
        if creds is not None:
            headers["Authorization"] = creds.authorization
        response = self._send(method, url, headers=headers, **kwargs)
        if response.status_code == 401 and creds is not None and creds.refresh_token:
            refreshed = self._refresh(creds)
            if refreshed is not None:
                headers["Authorization"] = refreshed.authorization
                response = self._send(method, url, headers=headers, **kwargs)
        if response.status_code == 401 and auth:
            raise CliError(f"{url} refused the cached login; run `nexus login EMAIL` again")
        if response.is_error:
            raise api_error(response)
        return response

    # -- credentials ----------------------------------------------------------------------

    def credentials(self, required: bool = True) -> Credentials | None:
        creds = load_credentials(self.home.credentials_file)
        if creds is None and required:
            raise CliError("not logged in; run `nexus login EMAIL` (or `nexus register EMAIL`)")
        return creds

    def _refresh(self, creds: Credentials) -> Credentials | None:
        response = self._send(
            "POST",
            f"{self.base_url('auth')}/auth/refresh",
            json={"refresh_token": creds.refresh_token},
        )
        if response.is_error:
            return None
        refreshed = Credentials.from_token_response(creds.email, response.json())
        # Some servers rotate refresh tokens, others keep them; never lose the one we have.
        refreshed.refresh_token = refreshed.refresh_token or creds.refresh_token
        save_credentials(self.home.credentials_file, refreshed)
        return refreshed

    # -- API ------------------------------------------------------------------------------

    def register(self, email: str, password: str) -> dict:
        url = f"{self.base_url('auth')}/auth/register"
        body = {"email": email, "password": password}
        return self.request("POST", url, auth=False, json=body).json()

    def login(self, email: str, password: str) -> Credentials:
        url = f"{self.base_url('auth')}/auth/token"
        form = {"username": email, "password": password}
        body = self.request("POST", url, auth=False, data=form).json()
        creds = Credentials.from_token_response(email, body)
        save_credentials(self.home.credentials_file, creds)
        return creds

    def submit_workflow(self, spec: dict) -> dict:
        return self.request("POST", f"{self.base_url('cluster')}/workflows", json=spec).json()

    def retry_workflow(self, workflow_id: str, training: dict) -> dict:
        url = f"{self.base_url('cluster')}/workflows/{workflow_id}/retry"
        return self.request("POST", url, json={"training": training}).json()

    def workflow(self, workflow_id: str) -> dict:
        url = f"{self.base_url('cluster')}/workflows/{workflow_id}"
        return self.request("GET", url).json()

    def workflow_events(self, workflow_id: str) -> Iterator[dict]:
        """The workflow's state each time it changes (the cluster's Server-Sent Events), until
        it finishes or the stream ends."""
        url = f"{self.base_url('cluster')}/workflows/{workflow_id}/events"
        creds = self.credentials()
        headers = {"Authorization": creds.authorization} if creds else {}
        # Reads wait as long as a quiet phase may last: the server sends a keep-alive.
        timeout = httpx.Timeout(30.0, read=120.0)
        try:
            with self.http.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise api_error(response)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield json.loads("\n".join(data))
                        data = []
        except httpx.TransportError as exc:
            raise Unreachable(
                f"the event stream of {url} broke off ({type(exc).__name__})"
            ) from exc

    def upload_dataset(self, path: Path, options: dict[str, str]) -> dict:
        url = f"{self.base_url('trainer')}/datasets"
        with path.open("rb") as f:  # streamed from disk, not read into memory
            files = {"file": (path.name, f)}
            return self.request("POST", url, files=files, params=options, timeout=3600).json()

    def datasets(self) -> dict:
        return self.request("GET", f"{self.base_url('trainer')}/datasets").json()

    def dataset(self, dataset_id: str) -> dict:
        return self.request("GET", f"{self.base_url('trainer')}/datasets/{dataset_id}").json()

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"{self.base_url('trainer')}/datasets/{dataset_id}")

    def predict(self, served_url: str, rows: list) -> dict:
        # Served models sit behind the same auth; send the token when we have one.
        has_login = self.credentials(required=False) is not None
        url = f"{served_url.rstrip('/')}/predict"
        return self.request("POST", url, auth=has_login, json={"rows": rows}).json()
