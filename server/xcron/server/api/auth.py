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
import asyncio
import contextvars
import enum
import hashlib
import hmac
import logging
import re
import secrets
import sys
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc

from xcron.server.api.ratelimit import LogThrottle
from xcron.server.api.status import to_status
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
]

log = logging.getLogger(__name__)

HMAC_SCHEME = "hmac-sha256"
HMAC_KEY_BYTES = 32
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 1024
NEGATIVE_CACHE_SIZE = 1024
MAX_CONCURRENT_VERIFICATIONS = 2

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: what a gRPC header value can carry
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


class Role(enum.StrEnum):
    """Permission sets, after SanteDB's job permissions (read / run / schedule; admin is all)."""

    READ = "read"
    RUN = "run"
    SCHEDULE = "schedule"
    ADMIN = "admin"


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


@dataclass(frozen=True)
class Principal:
    """Who a verified token belongs to."""

    name: str
    roles: frozenset[Role]

    def allows(self, role: Role) -> bool:
        return Role.ADMIN in self.roles or role in self.roles


CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("xcron_principal", default=None)
"""The caller of the current RPC, set by the interceptor for handlers that want to log it."""


class TokenFileError(ValueError):
    """The tokens file cannot be read or has a bad line; the message is ``file:line: reason``."""


# --- hashing ------------------------------------------------------------------------------------------------


def _scrypt(token: str, salt: bytes, length: int) -> bytes:
    return hashlib.scrypt(token.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=length)


def check_token_text(token: str) -> str | None:
    """Why ``token`` cannot be used as a bearer token, or None if it can."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"a token needs at least {MIN_TOKEN_LENGTH} characters"
    if len(token) > MAX_TOKEN_LENGTH:
        return f"a token has at most {MAX_TOKEN_LENGTH} characters"
    if not _TOKEN.fullmatch(token):
        return "a token is printable ASCII without spaces"
    return None


def _hmac(token: str, key: bytes) -> bytes:
    return hmac.new(key, token.encode(), hashlib.sha256).digest()


def hash_token(token: str) -> str:
    """The ``hmac-sha256$key$mac`` line field for ``token``, with a fresh random key."""
    problem = check_token_text(token)
    if problem:
        raise ValueError(problem)
    key = secrets.token_bytes(HMAC_KEY_BYTES)
    return f"{HMAC_SCHEME}${key.hex()}${_hmac(token, key).hex()}"


def scrypt_hash_token(token: str) -> str:
    """The older ``scrypt$salt$key`` form (still accepted in tokens files; kept for tests and tools)."""
    problem = check_token_text(token)
    if problem:
        raise ValueError(problem)
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${salt.hex()}${_scrypt(token, salt, KEY_BYTES).hex()}"


def _parse_hash(text: str) -> tuple[str, bytes, bytes]:
    """(scheme, salt or key, expected digest)."""
    scheme, _, rest = text.partition("$")
    salt_hex, _, key_hex = rest.partition("$")
    if scheme not in (HMAC_SCHEME, "scrypt"):
        raise ValueError(
            f"HASH must be {HMAC_SCHEME}$<key hex>$<mac hex> (make one with `xcron-server --hash-token`) "
            "or an older scrypt$<salt hex>$<key hex>"
        )
    if not _HEX.fullmatch(salt_hex) or not _HEX.fullmatch(key_hex):
        raise ValueError("HASH salt and key must be lowercase hex")
    salt, key = bytes.fromhex(salt_hex), bytes.fromhex(key_hex)
    if scheme == HMAC_SCHEME and (len(salt) < 16 or len(key) != 32):
        raise ValueError(f"{HMAC_SCHEME} HASH needs a key of at least 16 bytes and a 32-byte mac")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("HASH salt needs at least 8 bytes and key at least 16")
    return scheme, salt, key


# --- the table ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    scheme: str
    salt: bytes
    key: bytes

    @property
    def fast(self) -> bool:
        return self.scheme == HMAC_SCHEME

    def matches(self, token: str) -> bool:
        actual = _hmac(token, self.salt) if self.fast else _scrypt(token, self.salt, len(self.key))
        return hmac.compare_digest(actual, self.key)


class TokenTable:
    """The tokens of one tokens file; verifies bearer tokens, remembering the outcome per token."""

    def __init__(self, entries: Sequence[tuple[Principal, str]]) -> None:
        self._entries = [_Entry(principal, *_parse_hash(hashed)) for principal, hashed in entries]
        self._fast = [entry for entry in self._entries if entry.fast]
        self._slow = [entry for entry in self._entries if not entry.fast]
        self._known: dict[bytes, Principal] = {}
        self._unknown: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()  # the caches are read on the event loop and filled in worker threads
        self._semaphore: asyncio.Semaphore | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        return [entry.principal.name for entry in self._entries]

    @property
    def legacy_names(self) -> list[str]:
        """Names of the lines still hashed with scrypt (slow to check: worth migrating)."""
        return [entry.principal.name for entry in self._slow]

    def _check_fast(self, token: str) -> Principal | None:
        """Every HMAC line, each compared in constant time (microseconds in all)."""
        found = None
        for entry in self._fast:
            if entry.matches(token) and found is None:
                found = entry.principal
        return found

    def verify(self, token: str) -> Principal | None:
        """The principal of ``token`` or None; blocking (scrypt per line on a cache miss)."""
        if check_token_text(token) is not None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        hit, principal = self._cached(digest)
        if hit:
            return principal
        principal = self._check_fast(token) or next(
            (entry.principal for entry in self._slow if entry.matches(token)), None
        )
        with self._lock:
            if principal is not None:
                self._known[digest] = principal
            else:
                self._unknown[digest] = None
                while len(self._unknown) > NEGATIVE_CACHE_SIZE:
                    self._unknown.popitem(last=False)
        return principal

    def _cached(self, digest: bytes) -> tuple[bool, Principal | None]:
        """(whether the outcome for this token's SHA-256 is remembered, its principal or None if bad)."""
        with self._lock:
            if digest in self._known:
                return True, self._known[digest]
            if digest in self._unknown:
                self._unknown.move_to_end(digest)
                return True, None
            return False, None

    async def authenticate(self, token: str) -> Principal | None:
        """Like :meth:`verify`: HMAC lines inline (microseconds); scrypt lines, if any, in a worker thread,
        a bounded number at a time, and only for tokens no HMAC line matches."""
        if check_token_text(token) is not None:
            return None
        hit, principal = self._cached(hashlib.sha256(token.encode()).digest())
        if hit:
            return principal
        principal = self._check_fast(token)
        if principal is not None or not self._slow:
            return principal
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_VERIFICATIONS)
        async with self._semaphore:
            return await asyncio.to_thread(self.verify, token)


def parse_token_lines(lines: Iterable[str], source: str = "<tokens>") -> TokenTable:
    """Parses tokens-file text; raises TokenFileError naming ``source:line``."""
    entries: list[tuple[Principal, str]] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue

        def fail(reason: str, number: int = number) -> TokenFileError:
            return TokenFileError(f"{source}:{number}: {reason}")

        fields = line.split()
        if len(fields) != 3:
            raise fail(f"expected NAME ROLE[,ROLE...] HASH, got {len(fields)} field(s)")
        name, roles_text, hashed = fields
        if not _NAME.fullmatch(name):
            raise fail(f"bad name {name!r}: use letters, digits and ._@- (at most 64)")
        if name in seen:
            raise fail(f"duplicate name {name!r}")
        seen.add(name)
        roles: set[Role] = set()
        for role in roles_text.split(","):
            try:
                roles.add(Role(role))
            except ValueError:
                allowed = ", ".join(r.value for r in Role)
                raise fail(f"unknown role {role!r} (roles: {allowed})") from None
        try:
            _parse_hash(hashed)
        except ValueError as exc:
            raise fail(str(exc)) from None
        entries.append((Principal(name, frozenset(roles)), hashed))
    if not entries:
        raise TokenFileError(f"{source}: no tokens in the file (every call but health would be refused)")
    return TokenTable(entries)


def load_token_table(path: Path) -> TokenTable:
    """Reads a tokens file (see the module docstring); raises TokenFileError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"{path}: cannot read the tokens file: {exc}") from exc
    return parse_token_lines(text.splitlines(), str(path))


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
