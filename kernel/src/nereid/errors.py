"""The kernel's error taxonomy.

Every failure that reaches a client is a :class:`NereidError` of one kind. Frontends map the kind
to their protocol's status in one table (HTTP status, gRPC code), so the kinds mirror Triton's
``TRITONSERVER_Error_Code`` values.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    UNKNOWN = "UNKNOWN"
    INTERNAL = "INTERNAL"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ARG = "INVALID_ARG"
    UNAVAILABLE = "UNAVAILABLE"
    UNSUPPORTED = "UNSUPPORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    CANCELLED = "CANCELLED"


class NereidError(Exception):
    """An error with a kind and a message meant for the client."""

    kind: ErrorKind = ErrorKind.UNKNOWN

    def __init__(self, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.value}: {self.message})"

    @staticmethod
    def of(exc: BaseException) -> NereidError:
        """The exception itself when it is one of ours, else an INTERNAL error with its text."""
        if isinstance(exc, NereidError):
            return exc
        return InternalError(str(exc) or type(exc).__name__)


class UnknownError(NereidError):
    kind = ErrorKind.UNKNOWN


class InternalError(NereidError):
    kind = ErrorKind.INTERNAL


class NotFoundError(NereidError):
    kind = ErrorKind.NOT_FOUND


class InvalidArgumentError(NereidError):
    kind = ErrorKind.INVALID_ARG


class UnavailableError(NereidError):
    kind = ErrorKind.UNAVAILABLE


class UnsupportedError(NereidError):
    kind = ErrorKind.UNSUPPORTED


class AlreadyExistsError(NereidError):
    kind = ErrorKind.ALREADY_EXISTS


class CancelledError(NereidError):
    kind = ErrorKind.CANCELLED


_CLASS_OF_KIND: dict[ErrorKind, type[NereidError]] = {
    cls.kind: cls
    for cls in (
        UnknownError,
        InternalError,
        NotFoundError,
        InvalidArgumentError,
        UnavailableError,
        UnsupportedError,
        AlreadyExistsError,
        CancelledError,
    )
}


def error_of_kind(kind: ErrorKind | str, message: str) -> NereidError:
    """The error class of ``kind`` (an ErrorKind or its name; INTERNAL when unknown) with
    ``message``: how an error that crossed a process or a wire becomes ours again."""
    if isinstance(kind, str):
        kind = ErrorKind.__members__.get(kind, ErrorKind.INTERNAL)
    return _CLASS_OF_KIND[kind](message)
