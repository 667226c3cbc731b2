"""Domain errors -> gRPC status with google.rpc details, in exactly one place."""

from __future__ import annotations

import logging

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
    StoreUnavailable,
    XcronServerError,
)

DOMAIN = "xcron.dev"
log = logging.getLogger(__name__)

_CODES: list[tuple[type[XcronServerError], int]] = [
    (NotFound, code_pb2.NOT_FOUND),
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (Conflict, code_pb2.ABORTED),
    (LimitExceeded, code_pb2.RESOURCE_EXHAUSTED),
    (StoreUnavailable, code_pb2.UNAVAILABLE),
]


def to_status(error: XcronServerError) -> grpc.Status:
    code = next((c for cls, c in _CODES if isinstance(error, cls)), code_pb2.INTERNAL)
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))
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
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message, details=details))
