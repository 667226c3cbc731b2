"""Domain errors -> gRPC status with google.rpc details, in exactly one place."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from xcron.server.core.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    StoreUnavailable,
    Unauthenticated,
    XcronServerError,
)

DOMAIN = "xcron.dev"

_CODES: list[tuple[type[XcronServerError], int]] = [
    (NotFound, code_pb2.NOT_FOUND),
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (Conflict, code_pb2.ABORTED),
    (LimitExceeded, code_pb2.RESOURCE_EXHAUSTED),
    (StoreUnavailable, code_pb2.UNAVAILABLE),
    (Unauthenticated, code_pb2.UNAUTHENTICATED),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
]


def code_of(error: XcronServerError) -> int:
    """The google.rpc code (same numbers as grpc.StatusCode and Connect's codes) for an error."""
    return next((c for cls, c in _CODES if isinstance(error, cls)), code_pb2.INTERNAL)


def to_status(error: XcronServerError) -> grpc.Status:
    """The one status builder: code, message, ErrorInfo (reason, domain, metadata), BadRequest for a field."""
    return rpc_status.to_status(to_rpc_status(error))


def to_rpc_status(error: XcronServerError) -> status_pb2.Status:
    """The google.rpc.Status for an error (what a non-gRPC transport serialises)."""
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))
    details.append(info)
    if isinstance(error, InvalidArgument) and error.field:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.description)
                ]
            )
        )
        details.append(bad)
    return status_pb2.Status(code=code_of(error), message=error.message, details=details)
