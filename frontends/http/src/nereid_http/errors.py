"""The one table from the kernel's error kinds to HTTP statuses (as Triton maps them)."""

from __future__ import annotations

import orjson
from nereid.errors import ErrorKind, NereidError

HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.UNKNOWN: 400,
    ErrorKind.INVALID_ARG: 400,
    ErrorKind.ALREADY_EXISTS: 400,
    ErrorKind.CANCELLED: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.UNSUPPORTED: 501,
    ErrorKind.INTERNAL: 500,
}


def status_of(error: NereidError) -> int:
    return HTTP_STATUS.get(error.kind, 400)


def error_body(message: str) -> bytes:
    """Triton's error object: ``{"error": "<message>"}``."""
    return orjson.dumps({"error": message})


__all__ = ["HTTP_STATUS", "error_body", "status_of"]
