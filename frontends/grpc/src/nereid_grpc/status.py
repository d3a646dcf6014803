"""The one table from the kernel's error kinds to gRPC status codes (Triton's mapping)."""

from __future__ import annotations

import grpc
from nereid import ErrorKind, NereidError

STATUS_BY_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.UNKNOWN: grpc.StatusCode.UNKNOWN,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.INVALID_ARG: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
}


def status_code(error: NereidError) -> grpc.StatusCode:
    return STATUS_BY_KIND.get(error.kind, grpc.StatusCode.UNKNOWN)
