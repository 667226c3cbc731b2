"""Bearer-token authentication and per-RPC roles for the gRPC API (``--tokens-file``).

Clients send ``authorization: Bearer <token>`` metadata. Without ``--tokens-file`` there is no
authentication at all: then rely on the listen address (loopback only) or on mutual TLS
(``--tls-client-ca``) to decide who may connect.

Tokens file: one token per line, fields separated by whitespace, ``#`` starts a comment::

    # NAME        ROLE[,ROLE...]   HASH
    dashboard     read             hmac-sha256$8c1d...$4be0...
    ci-deploy     read,run         hmac-sha256$19a2...$77f3...
    ops           admin            scrypt$e044...$0c5b...

- NAME labels the token in logs and error messages (letters, digits, ``._@-``; unique in the file).
- ROLE is one of the roles below; they do not imply each other, except ``admin`` which allows everything.

  ========== ===============================================================================
  read       ListJobs, GetJob, WatchJobs, ListExecutions, GetExecution
  run        RunJob, CancelJob
  schedule   SetSchedule, PauseSchedule, ResumeSchedule, ReloadSchedules
  admin      all of the above
  ========== ===============================================================================

- HASH is ``hmac-sha256$<key hex>$<mac hex>``: HMAC-SHA256 of the token under a random 32-byte key of
  its own line. Tokens are random and long (``new`` makes 256-bit ones), so a memory-hard password hash
  buys nothing: a check costs microseconds and is compared in constant time, and a flood of bad tokens
  costs nothing that valid ones wait for. Lines made before (``scrypt$<salt hex>$<key hex>``,
  ``hashlib.scrypt(token, salt=salt, n=2**14, r=8, p=1)``) are still accepted: they are tried only when
  no HMAC line matches, in worker threads, at most two at a time; the server warns about them at start.
  Migrate by issuing new tokens (or ``hash``-ing the old ones again) and replacing the lines.
  The file never holds a token itself, so reading it does not let anyone call the server.
  ``python -m xcron.server.api.auth new NAME ROLES`` makes a random token and prints its line on stdout
  and the token on stderr; ``xcron-server --hash-token`` (or ``python -m xcron.server.api.auth hash``)
  prints the HASH of a token read from stdin.

The health service (``grpc.health.v1.Health``) is always open, so that load balancers and orchestrators
need no secret. Reflection is open by default (it reveals only the public contract); with
``--reflection-requires-token`` it needs any valid token. Methods the server does not have pass through
and get UNIMPLEMENTED; a JobService method missing from the role table needs ``admin`` (fail closed).

Failures are rich statuses like the other errors: UNAUTHENTICATED (reason ``UNAUTHENTICATED``) for a
missing or unknown token, PERMISSION_DENIED (reason ``PERMISSION_DENIED``, ``ErrorInfo.metadata``
``required_role``) for a valid token without the method's role, both in domain ``xcron.dev``.

Refused calls (UNAUTHENTICATED, PERMISSION_DENIED) are counted per peer address in
``xcron_auth_failures_total{peer,reason}`` and logged at most once a minute per peer. The file is read
once at start: restart the server to add, change or revoke tokens.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TextIO

import grpc

from xcron.server.api.ratelimit import LogThrottle
from xcron.server.api.status import to_status
from xcron.server.api.tokens import (
    Principal,
    Role,
    TokenFileError,
    TokenTable,
    hash_token,
    load_token_table,
    parse_token_lines,
    scrypt_hash_token,
)
from xcron.server.api.wrapping import same_kind
from xcron.server.core.errors import PermissionDenied, Unauthenticated, XcronServerError
from xcron.v1 import job_service_pb2

__all__ = [
    "CURRENT_PRINCIPAL",
    "METHOD_ROLES",
    "AuthInterceptor",
    "AuthRefused",
    "Authorizer",
    "Principal",
    "Role",
    "TokenFileError",
    "TokenTable",
    "hash_token",
    "load_token_table",
    "parse_token_lines",
    "scrypt_hash_token",
]

log = logging.getLogger(__name__)

_SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
_ROLE_METHODS: dict[Role, tuple[str, ...]] = {
    Role.READ: ("ListJobs", "GetJob", "WatchJobs", "ListExecutions", "GetExecution"),
    Role.RUN: ("RunJob", "CancelJob"),
    Role.SCHEDULE: ("SetSchedule", "PauseSchedule", "ResumeSchedule", "ReloadSchedules"),
}
METHOD_ROLES: dict[str, Role] = {f"/{_SERVICE}/{name}": role for role, names in _ROLE_METHODS.items() for name in names}
"""Full gRPC method path -> the role it needs."""
ANY_ROLE_METHODS = frozenset({f"/{_SERVICE}/GetCaller"})
"""Methods any valid token may call (they reveal only the caller's own name and roles)."""

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("xcron_principal", default=None)
"""The caller of the current RPC, set by the interceptor for handlers that want to log it."""


# --- the interceptor ----------------------------------------------------------------------------------------


def unauthenticated(message: str) -> Unauthenticated:
    return Unauthenticated(message)


def permission_denied(method: str, role: Role, principal: Principal) -> PermissionDenied:
    has = ",".join(sorted(r.value for r in principal.roles)) or "no roles"
    return PermissionDenied(
        f"{method.rsplit('/', 1)[-1]} needs the {role.value!r} role; token {principal.name!r} has {has}",
        metadata={"required_role": role.value, "method": method},
    )


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str | None, str]:
    """The token of the ``authorization: Bearer <token>`` metadata, or None and why not."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        return None, "missing bearer token: send 'authorization: Bearer <token>' metadata"
    if len(values) > 1:
        return None, "more than one authorization header"
    value = values[0]
    if not isinstance(value, str):
        return None, "authorization metadata must be text"
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, "authorization metadata must be 'Bearer <token>'"
    return token.strip(), ""


FailureListener = Callable[[str, str], None]
"""Called with (peer address, reason) for every refused call: the metrics count them."""
MAX_PEERS = 1000
"""Distinct peer addresses counted by name; the others count as "other" (bounded metric labels)."""


def peer_address(peer: str) -> str:
    """The address of a gRPC peer string without its port: ``ipv4:10.0.0.7:5123`` -> ``10.0.0.7``."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return kind or "unknown"


def _denying_handler(
    handler: grpc.RpcMethodHandler, method: str, status: grpc.Status, refused: Callable[[str, str, str], None]
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with ``status`` before reading the request
    (no deserializer: unauthenticated bytes are never parsed)."""

    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        refused(context.peer(), method, status.details)
        await context.abort_with_status(status)

    return same_kind(handler, deny, decoded=False)


class AuthRefused(Exception):
    """A call the Authorizer refuses: `error` is what the caller is told (UNAUTHENTICATED or PERMISSION_DENIED),
    `kind` what the metrics count ("missing_token", "invalid_token", "permission_denied")."""

    def __init__(self, error: XcronServerError, kind: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.kind = kind


class Authorizer:
    """The transport-neutral check: a method's full path and the call's metadata -> who calls, or AuthRefused.
    The gRPC interceptor below is one adapter; an HTTP/Connect transport passes its headers the same way
    (lower-case names, e.g. ("authorization", "Bearer ...")) and the same /xcron.v1.JobService/Method path."""

    def __init__(self, tokens: TokenTable, *, reflection_requires_token: bool = False) -> None:
        self._tokens = tokens
        self._reflection_requires_token = reflection_requires_token

    def is_open(self, method: str) -> bool:
        """Methods anyone may call: health always, reflection unless the server requires a token for it."""
        if method.startswith(HEALTH_PREFIX):
            return True
        return method.startswith(REFLECTION_PREFIXES) and not self._reflection_requires_token

    async def check(self, method: str, metadata: Iterable[tuple[str, Any]] | None) -> Principal | None:
        """The caller's principal; None for an open method. Unknown methods need the admin role."""
        if self.is_open(method):
            return None
        open_to_any_token = method.startswith(REFLECTION_PREFIXES) or method in ANY_ROLE_METHODS
        role = None if open_to_any_token else METHOD_ROLES.get(method, Role.ADMIN)
        token, problem = bearer_token(metadata)
        if token is None:
            raise AuthRefused(unauthenticated(problem), "missing_token")
        principal = await self._tokens.authenticate(token)
        if principal is None:
            raise AuthRefused(unauthenticated("invalid bearer token"), "invalid_token")
        if role is not None and not principal.allows(role):
            raise AuthRefused(permission_denied(method, role, principal), "permission_denied")
        return principal


class AuthFailures:
    """Refused calls from every transport: counted per peer address (at most MAX_PEERS addresses, the
    rest as "other", so no client can grow the metric without bound) and logged at most once per
    interval per address."""

    def __init__(self, on_failure: FailureListener | None = None, *, log_interval: float = 60.0) -> None:
        self._on_failure = on_failure
        self._throttle = LogThrottle(log, log_interval)
        self._peers: set[str] = set()

    def record(self, address: str, reason: str, method: str, peer: str, details: str) -> None:
        if address not in self._peers and len(self._peers) >= MAX_PEERS:
            address = "other"
        self._peers.add(address)
        if self._on_failure is not None:
            self._on_failure(address, reason)
        self._throttle.warning(address, "refused %s from %s: %s", method, peer, details)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """Checks the bearer token and the method's role before the handler runs."""

    def __init__(
        self,
        tokens: TokenTable,
        *,
        reflection_requires_token: bool = False,
        on_failure: FailureListener | None = None,
        log_interval: float = 60.0,
        failures: AuthFailures | None = None,
    ) -> None:
        """`failures`: shared with the other transports; else one is made from on_failure and log_interval."""
        self._authorizer = Authorizer(tokens, reflection_requires_token=reflection_requires_token)
        self._failures = failures or AuthFailures(on_failure, log_interval=log_interval)

    def _refuser(self, reason: str) -> Callable[[str, str, str], None]:
        def refused(peer: str, method: str, details: str) -> None:
            self._failures.record(peer_address(peer), reason, method, peer, details)

        return refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown methods: gRPC answers UNIMPLEMENTED
        method: str = handler_call_details.method
        try:
            principal = await self._authorizer.check(method, handler_call_details.invocation_metadata)
        except AuthRefused as refused:
            return _denying_handler(handler, method, to_status(refused.error), self._refuser(refused.kind))
        if principal is not None:
            CURRENT_PRINCIPAL.set(principal)
        return handler


# --- command line -------------------------------------------------------------------------------------------


def hash_token_main(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """``xcron-server --hash-token``: the HASH for the token on stdin's first line (newline stripped)."""
    token = stdin.readline().rstrip("\r\n")
    try:
        print(hash_token(token), file=stdout)
    except ValueError as exc:
        print(f"xcron-server: cannot hash the token: {exc}", file=stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xcron.server.api.auth hash|new``: make tokens-file entries."""
    parser = argparse.ArgumentParser(prog="python -m xcron.server.api.auth", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("hash", help="print the HASH of the token read from stdin")
    new = commands.add_parser("new", help="make a random token: its line on stdout, the token on stderr")
    new.add_argument("name", help="the token's name")
    new.add_argument("roles", help="comma-separated: " + ",".join(r.value for r in Role))
    args = parser.parse_args(argv)
    if args.command == "hash":
        return hash_token_main(sys.stdin, sys.stdout, sys.stderr)
    token = secrets.token_urlsafe(32)
    line = f"{args.name} {args.roles} {hash_token(token)}"
    try:
        parse_token_lines([line])
    except TokenFileError as exc:
        parser.error(str(exc).removeprefix("<tokens>:1: "))
    print(line)
    print(token, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
