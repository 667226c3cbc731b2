"""The HTTP port (`--http-listen`): JobService over Connect and gRPC-Web, and the jobs panel.

One ASGI app served by uvicorn as a task in the server's own event loop (one process, one state):

- `/xcron.v1.JobService/*`: the Connect adapter (xcron.server.api.connect); `/grpc.health.v1.Health/Check`;
- `/` and `/static/*`: the panel, built into the package (xcron/server/web/static), served from memory
  with a strict Content-Security-Policy (no inline script or style, nothing from elsewhere);
- unsafe calls (anything but GET and HEAD) carrying an `Origin` other than this server's own are refused
  with 403 before they reach a handler, so another site cannot make a browser call the API. There is no
  CORS: the panel is same-origin. curl and other non-browser clients send no Origin and are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from importlib import resources
from typing import Any

import uvicorn

from xcron.server.api.tls import TlsFiles

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8", ".css": b"text/css"}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def load_panel() -> dict[str, tuple[bytes, bytes]]:
    """The panel's files by URL path: (content type, bytes); empty if the package has no built panel."""
    files: dict[str, tuple[bytes, bytes]] = {}
    static = resources.files("xcron.server.web") / "static"
    if not static.is_dir():
        return files
    for item in static.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in _TYPES:
            files[f"/static/{item.name}"] = (_TYPES[suffix], item.read_bytes())
    if "/static/index.html" in files:
        files["/"] = files.pop("/static/index.html")
    return files


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _same_origin(scope: Scope, origin: str) -> bool:
    host = _header(scope, b"host")
    scheme = "https" if scope.get("scheme") == "https" else "http"
    return host is not None and origin == f"{scheme}://{host}"


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *SECURITY_HEADERS, *extra]})
    await send({"type": "http.response.body", "body": body})


def loopback_hosts(listen_host: str) -> frozenset[str]:
    """The names a loopback listener answers to (DNS rebinding: a page on evil.example resolved to
    127.0.0.1 sends `Host: evil.example`, and its Origin matches that Host, so the Origin check alone
    lets it through)."""
    return frozenset({"localhost", "127.0.0.1", "::1", listen_host.strip("[]").lower()})


def _host_name(host: str) -> str:
    """`Host` without its port (and without IPv6 brackets), lower-cased."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def http_app(
    connect: ASGIApp,
    panel: dict[str, tuple[bytes, bytes]],
    health: ASGIApp | None = None,
    *,
    allowed_hosts: frozenset[str] | None = None,
) -> ASGIApp:
    """`allowed_hosts`: on a loopback listener, the only `Host` names served (see loopback_hosts)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets; lifespan is off
        method: str = scope["method"]
        path: str = scope["path"]
        if allowed_hosts is not None and _host_name(_header(scope, b"host") or "") not in allowed_hosts:
            log.info(
                "refused %s %s for host %r: not a name of this loopback listener", method, path, _header(scope, b"host")
            )
            await _plain(send, 403, "this server answers to its loopback address only (e.g. http://127.0.0.1:PORT/)\n")
            return
        origin = _header(scope, b"origin")
        if method not in _SAFE_METHODS and origin is not None and not _same_origin(scope, origin):
            log.info("refused cross-origin %s %s from %s", method, path, origin)
            await _plain(send, 403, "cross-origin calls are not allowed: use the panel this server serves\n")
            return
        if method in ("GET", "HEAD") and path in panel:
            content_type, body = panel[path]
            headers = [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-cache"),
                *SECURITY_HEADERS,
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
            return
        if path.startswith("/xcron.v1.JobService/"):
            await connect(scope, receive, send)
            return
        if health is not None and path.startswith("/grpc.health.v1.Health/"):
            await health(scope, receive, send)
            return
        await _plain(send, 404, "not found\n")

    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside xcron's loop: xcron owns the signals and stops it from its own shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: ASGIApp, listen: str, tls: TlsFiles | None) -> None:
        host, _, port = listen.rpartition(":")
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs.update(ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key))
            if tls.client_ca is not None:
                kwargs.update(ssl_ca_certs=str(tls.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
        self._config = uvicorn.Config(
            app,
            host=host.strip("[]") or "127.0.0.1",
            port=int(port),
            # httptools, not uvicorn's pure-Python fallback (h11): a Connect call costs the server ~30 % less CPU.
            http="httptools",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
            **kwargs,
        )
        self._server = _EmbeddedServer(self._config)
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    def bind(self) -> int:
        """Binds the listening socket now (before the store opens and anything runs), so an address in use
        is an OSError here rather than uvicorn's sys.exit inside its task after start-up; returns the port."""
        host, port = self._config.host, self._config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, reuse_port=False)
        self.port = int(self._socket.getsockname()[1])
        return self.port

    async def start(self) -> int:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="xcron-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError(f"cannot serve HTTP on {self._config.host}:{self._config.port}")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
