"""Bearer tokens: the tokens file's hashes, and a table that verifies tokens against them.

See xcron.server.api.auth for the file's format and the roles. HMAC lines cost microseconds and are
checked inline; older scrypt lines are checked in worker threads, a bounded number at a time, and only
for tokens no HMAC line matches.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Principal:
    """Who a verified token belongs to."""

    name: str
    roles: frozenset[Role]

    def allows(self, role: Role) -> bool:
        return Role.ADMIN in self.roles or role in self.roles


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


def _usable(token: str) -> str:
    problem = check_token_text(token)
    if problem:
        raise ValueError(problem)
    return token


def hash_token(token: str) -> str:
    """The ``hmac-sha256$key$mac`` line field for ``token``, with a fresh random key."""
    key = secrets.token_bytes(HMAC_KEY_BYTES)
    return f"{HMAC_SCHEME}${key.hex()}${_hmac(_usable(token), key).hex()}"


def scrypt_hash_token(token: str) -> str:
    """The older ``scrypt$salt$key`` form (still accepted in tokens files; kept for tests and tools)."""
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${salt.hex()}${_scrypt(_usable(token), salt, KEY_BYTES).hex()}"


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

    def _check_inline(self, token: str) -> tuple[bool, Principal | None, bytes]:
        """(decided, principal, the token's SHA-256): decided without scrypt when the text cannot be a token,
        the outcome is remembered, an HMAC line matches (microseconds: not worth a cache entry) or there
        are no scrypt lines to try."""
        if check_token_text(token) is not None:
            return True, None, b""
        digest = hashlib.sha256(token.encode()).digest()
        hit, principal = self._cached(digest)
        if hit:
            return True, principal, digest
        principal = self._check_fast(token)
        return principal is not None or not self._slow, principal, digest

    def verify(self, token: str) -> Principal | None:
        """The principal of ``token`` or None; blocking (scrypt per line on a cache miss)."""
        decided, principal, digest = self._check_inline(token)
        return principal if decided else self._verify_slow(token, digest)

    def _verify_slow(self, token: str, digest: bytes) -> Principal | None:
        """The scrypt lines (the HMAC ones are known not to match); remembers the outcome."""
        principal = next((entry.principal for entry in self._slow if entry.matches(token)), None)
        self._remember(digest, principal)
        return principal

    def _remember(self, digest: bytes, principal: Principal | None) -> None:
        with self._lock:
            if principal is not None:
                self._known[digest] = principal
            else:
                self._unknown[digest] = None
                while len(self._unknown) > NEGATIVE_CACHE_SIZE:
                    self._unknown.popitem(last=False)

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
        decided, principal, digest = self._check_inline(token)
        if decided:
            return principal
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_VERIFICATIONS)
        async with self._semaphore:
            hit, principal = self._cached(digest)  # another call may have checked it meanwhile
            if hit:
                return principal
            return await asyncio.to_thread(self._verify_slow, token, digest)


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
