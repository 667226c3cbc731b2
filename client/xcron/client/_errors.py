"""The client's exceptions, and the one place where gRPC errors become them.

Every failed call raises an :class:`XcronError` (never a raw :class:`grpc.RpcError`). It keeps the gRPC
status code, the message, and the ``google.rpc`` details the server packs into the status: the ``ErrorInfo``
reason, domain and metadata, and the ``BadRequest`` field violations. The subclasses also inherit the matching
built-in exception, so ``except LookupError`` catches an unknown job::

    Exception
    └── XcronError                                       any other code (UNKNOWN, INTERNAL, UNIMPLEMENTED…)
        ├── CancelledError                               CANCELLED
        ├── InvalidArgumentError (+ ValueError)          INVALID_ARGUMENT
        ├── DeadlineExceededError (+ TimeoutError)       DEADLINE_EXCEEDED (also run_and_wait's own timeout)
        ├── NotFoundError (+ LookupError)                NOT_FOUND
        ├── AlreadyExistsError                           ALREADY_EXISTS
        ├── PermissionDeniedError (+ PermissionError)    PERMISSION_DENIED
        ├── ResourceExhaustedError                       RESOURCE_EXHAUSTED
        ├── FailedPreconditionError                      FAILED_PRECONDITION
        ├── AbortedError                                 ABORTED (e.g. the job is already running)
        ├── UnavailableError (+ ConnectionError)         UNAVAILABLE
        └── UnauthenticatedError                         UNAUTHENTICATED

``CancelledError`` is the gRPC status; it is unrelated to :class:`asyncio.CancelledError`, which the
asyncio client lets through untouched.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "XcronError",
]


@dataclass(frozen=True, kw_only=True)
class FieldViolation:
    """One bad field of a request, from the ``google.rpc.BadRequest`` detail of an INVALID_ARGUMENT error."""

    field: str
    """A path to the field, e.g. ``"schedules[0].cron.expression"``."""
    description: str
    """Why its value is wrong."""


class XcronError(Exception):
    """The root of every error the xcron client raises."""

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    """The status code this class stands for."""

    code: grpc.StatusCode
    """The gRPC status code."""
    message: str
    """The status message the server sent."""
    reason: str | None
    """The stable machine-readable ``ErrorInfo.reason``, e.g. ``"JOB_NOT_FOUND"``; None without ErrorInfo."""
    domain: str | None
    """The ``ErrorInfo.domain`` (``"xcron.dev"`` for the xcron server); None without ErrorInfo."""
    metadata: Mapping[str, str]
    """The ``ErrorInfo.metadata`` (read-only); empty without ErrorInfo."""
    field_violations: tuple[FieldViolation, ...]
    """The ``BadRequest`` field violations; empty without a BadRequest detail."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code if code is not None else self.default_code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = types.MappingProxyType(dict(metadata or {}))
        self.field_violations = field_violations

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        for violation in self.field_violations:
            text += f"\n  {violation.field}: {violation.description}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, message={self.message!r}, reason={self.reason!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only state does not survive the default exception pickling; keep it for multiprocessing.
        return (
            _rebuild,
            (type(self), self.message, self.code, self.reason, self.domain, dict(self.metadata)),
            {"field_violations": self.field_violations},
        )


def _rebuild(
    cls: type[XcronError],
    message: str,
    code: grpc.StatusCode,
    reason: str | None,
    domain: str | None,
    metadata: dict[str, str],
) -> XcronError:
    return cls(message, code=code, reason=reason, domain=domain, metadata=metadata)


class CancelledError(XcronError):
    """The call was cancelled (CANCELLED)."""

    default_code = grpc.StatusCode.CANCELLED


class InvalidArgumentError(XcronError, ValueError):
    """A request field has a bad value (INVALID_ARGUMENT); see :attr:`field_violations`."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(XcronError, TimeoutError):
    """The call or the wait did not finish in time (DEADLINE_EXCEEDED)."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(XcronError, LookupError):
    """No such job or execution (NOT_FOUND)."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(XcronError):
    """The resource already exists (ALREADY_EXISTS)."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(XcronError, PermissionError):
    """The caller lacks the role for this call (PERMISSION_DENIED)."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(XcronError):
    """A server limit was hit, e.g. too many watchers (RESOURCE_EXHAUSTED)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(XcronError):
    """The job's state forbids the call, e.g. cancelling a job that is not running (FAILED_PRECONDITION)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(XcronError):
    """A concurrent operation was refused, e.g. running a job that is already running (ABORTED)."""

    default_code = grpc.StatusCode.ABORTED


class UnavailableError(XcronError, ConnectionError):
    """The server cannot be reached or its store is temporarily unusable (UNAVAILABLE); retrying may help."""

    default_code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(XcronError):
    """Missing or invalid credentials (UNAUTHENTICATED)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[XcronError]] = {
    cls.default_code: cls
    for cls in (
        CancelledError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        UnavailableError,
        UnauthenticatedError,
    )
}


def from_rpc_error(error: grpc.RpcError) -> XcronError:
    """The XcronError for a failed call: the one place status codes and ``google.rpc`` details are mapped.

    Works for both a sync :class:`grpc.RpcError` (which is the call) and a :class:`grpc.aio.AioRpcError`: both
    offer ``code()``, ``details()`` and ``trailing_metadata()`` without awaiting.
    """
    code_of = getattr(error, "code", None)
    if code_of is None:  # an RpcError that is not a call: nothing more to learn
        return XcronError(str(error) or type(error).__name__, code=grpc.StatusCode.UNKNOWN)
    code: grpc.StatusCode = code_of()
    message: str = error.details() or ""
    reason = domain = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # the packed status disagrees with the call's: trust the call, drop the details
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(field=v.field, description=v.description) for v in bad_request.field_violations
                )
    cls = _BY_CODE.get(code, XcronError)
    return cls(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=tuple(violations),
    )


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise a :class:`grpc.RpcError` from the block as the matching :class:`XcronError`."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error
