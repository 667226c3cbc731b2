"""Domain errors. The API layer maps each class to one gRPC status code, in one place.

XcronServerError
├── NotFound            (LookupError)       -> NOT_FOUND
├── InvalidArgument     (ValueError)        -> INVALID_ARGUMENT, names the field
├── FailedPrecondition                      -> FAILED_PRECONDITION
├── Conflict                                -> ABORTED (e.g. already running)
├── LimitExceeded                           -> RESOURCE_EXHAUSTED
├── StoreUnavailable    (OSError-ish)       -> UNAVAILABLE (the schedule file or state store cannot be written)
├── Unauthenticated                         -> UNAUTHENTICATED (no or no valid bearer token)
└── PermissionDenied    (PermissionError)   -> PERMISSION_DENIED (the token lacks the method's role)

`metadata` goes to the status's ErrorInfo (e.g. the role a method needs).
"""

from __future__ import annotations


class XcronServerError(Exception):
    """Root of the errors a request can cause; `reason` is stable and machine-readable."""

    reason = "XCRON_ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}
        if reason is not None:
            self.reason = reason


class NotFound(XcronServerError, LookupError):
    reason = "NOT_FOUND"


class InvalidArgument(XcronServerError, ValueError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, reason=reason)
        self.field = field
        self.description = message


class FailedPrecondition(XcronServerError):
    reason = "FAILED_PRECONDITION"


class Conflict(XcronServerError):
    reason = "CONFLICT"


class LimitExceeded(XcronServerError):
    reason = "LIMIT_EXCEEDED"


class StoreUnavailable(XcronServerError):
    reason = "STORE_UNAVAILABLE"


class Unauthenticated(XcronServerError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(XcronServerError, PermissionError):
    reason = "PERMISSION_DENIED"
