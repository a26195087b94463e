"""A stand-in for Google Cloud's REST APIs on 127.0.0.1, for wire tests.

No emulator exists for Vertex AI or Cloud Scheduler, so tests point the real client
libraries (and the real CLI) at this server: it records every request, answers the ones a
test has routed, and answers anything else with Google's 404 error shape. Credentials go
through the real service-account flow: `service_account_key` writes a throwaway key whose
token URI is this server's `/token`, so a request that reaches a routed API carries the
bearer token this server issued (and `requests` proves it).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ACCESS_TOKEN = "standin-access-token"
CLIENT_EMAIL = "tester@standin-project.iam.gserviceaccount.com"


@dataclass
class Request:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def authorized(self) -> bool:
        """Whether the request carries the token this server issued, or the self-signed JWT
        google-auth sends instead when a client library allows it, from the stand-in key."""
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        if token == ACCESS_TOKEN:
            return True
        try:
            claims = token.split(".")[1]
            issuer = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["iss"]
        except (IndexError, ValueError, KeyError, TypeError):
            return False
        return issuer == CLIENT_EMAIL


Handler = Callable[[Request, re.Match[str]], tuple[int, Any]]
"""Answers a routed request: (HTTP status, JSON body)."""


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


@dataclass
class GoogleStandIn:
    """A recording HTTP server answering like Google's APIs; use as a context manager."""

    requests: list[Request] = field(default_factory=list)
    _routes: list[_Route] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the stand-in is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, method: str, path_pattern: str, handler: Handler) -> None:
        """Answer `method` requests whose path fully matches `path_pattern` (a regex) with
        `handler`; later routes win over earlier ones."""
        self._routes.insert(0, _Route(method, re.compile(path_pattern), handler))

    def respond(self, method: str, path_pattern: str, body: Any, status: int = 200) -> None:
        """Answer matching requests with a fixed JSON body."""
        self.route(method, path_pattern, lambda _request, _match: (status, body))

    def requests_to(self, method: str, path_pattern: str) -> list[Request]:
        """The recorded requests of `method` whose path fully matches `path_pattern`."""
        pattern = re.compile(path_pattern)
        return [r for r in self.requests if r.method == method and pattern.fullmatch(r.path)]

    def __enter__(self) -> GoogleStandIn:
        standin = self

        class _Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    raw=self.rfile.read(length) if length else b"",
                )
                standin.requests.append(request)
                status, body = standin._dispatch(request)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

            def log_message(self, *_args: Any) -> None:  # the recording is the log
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _dispatch(self, request: Request) -> tuple[int, Any]:
        if request.method == "POST" and request.path == "/token":
            return 200, {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if route.method == request.method and match:
                if not request.authorized:
                    return 401, _error(401, "UNAUTHENTICATED", "no valid bearer token")
                return route.handler(request, match)
        return 404, _error(404, "NOT_FOUND", f"{request.method} {request.path} is not routed")


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "status": status, "message": message}}


def service_account_key(path: Path, token_uri: str) -> Path:
    """Write a throwaway service-account key file (a fresh RSA key, never committed) whose
    token URI is `token_uri`, so google-auth's real flow gets its tokens there."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": CLIENT_EMAIL.split("@")[1].split(".")[0],
                "private_key_id": "standin",
                "private_key": pem,
                "client_email": CLIENT_EMAIL,
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path
