"""Nereid: an inference server in Python that speaks Triton's protocol.

The public surface: :class:`Server`, the hook marker :data:`hookimpl`, the request types and the
error taxonomy.
"""

from importlib import metadata as _metadata

from .errors import (
    AlreadyExistsError,
    CancelledError,
    ErrorKind,
    InternalError,
    InvalidArgumentError,
    NereidError,
    NotFoundError,
    UnavailableError,
    UnknownError,
    UnsupportedError,
)
from .hookspecs import hookimpl
from .types import (
    DataType,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    ResponseStream,
    Tensor,
)

try:
    __version__ = _metadata.version("nereid")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def __getattr__(name: str):
    # Server pulls in the whole kernel; keep ``import nereid`` cheap for plugin modules.
    if name == "Server":
        from .server import Server

        return Server
    raise AttributeError(name)


__all__ = [
    "AlreadyExistsError",
    "CancelledError",
    "DataType",
    "ErrorKind",
    "InferenceRequest",
    "InferenceResponse",
    "InternalError",
    "InvalidArgumentError",
    "NereidError",
    "NotFoundError",
    "RequestedOutput",
    "ResponseStream",
    "Server",
    "Tensor",
    "UnavailableError",
    "UnknownError",
    "UnsupportedError",
    "__version__",
    "hookimpl",
]
