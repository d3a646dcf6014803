"""Shared-memory regions registered by clients, shared by every frontend.

A region registered over HTTP serves gRPC requests too: frontends only decode the
``shared_memory_region``/``offset``/``byte_size`` parameters and ask this manager for the bytes.

Regions are read and written with ``pread``/``pwrite`` on the open file, not through a
mapping: a client can shrink its file at any time, and touching a mapped page past the new end
raises SIGBUS, which would kill the server. Through the file, a short read is an error for the
request. Inputs are copied once, so a model never sees the client change them either.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any

from .errors import (
    AlreadyExistsError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)
from .types import DataType, Tensor

SHM_ROOT = "/dev/shm"
SHM_DISABLED_MESSAGE = (
    "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
)


@dataclass
class SystemRegion:
    name: str
    key: str
    offset: int
    byte_size: int
    fd: int

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


def _open_key(key: str) -> int:
    """Open the POSIX shared-memory object ``key`` read-write, as ``shm_open`` would: one name
    under ``/dev/shm`` (leading slashes dropped), no other slash, no ``.`` or ``..``, no
    symbolic link, a regular file. Anything else could reach a file outside ``/dev/shm``."""
    name = key.lstrip("/")
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        fd = os.open(os.path.join(SHM_ROOT, name), flags)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    except OSError as exc:
        raise InvalidArgumentError(
            f"Unable to open shared memory region: '{key}': {exc.strerror}"
        ) from None
    return fd


class SystemSharedMemoryManager:
    """POSIX shared-memory regions by name. With ``enabled`` false (``--allow-client-shm``
    off) nothing can be registered, so no request can read or write a region."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._regions: dict[str, SystemRegion] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not self.enabled:
            raise UnavailableError(SHM_DISABLED_MESSAGE)
        with self._lock:
            if name in self._regions:
                raise AlreadyExistsError(f"shared memory region '{name}' already in manager")
            if offset < 0 or byte_size <= 0:
                raise InvalidArgumentError(
                    f"invalid offset {offset} or byte size {byte_size} for shared memory "
                    f"region '{name}'"
                )
            fd = _open_key(key)
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                os.close(fd)
                raise InvalidArgumentError(
                    f"shared memory region '{name}' of {size} bytes cannot hold offset "
                    f"{offset} + byte size {byte_size}"
                )
            self._regions[name] = SystemRegion(name, key, offset, byte_size, fd)

    def unregister(self, name: str = "") -> None:
        """Unregister one region, or every region when ``name`` is empty."""
        with self._lock:
            names = [name] if name else list(self._regions)
            for region_name in names:
                region = self._regions.pop(region_name, None)
                if region is not None:
                    os.close(region.fd)

    def status(self, name: str = "") -> list[dict[str, Any]]:
        with self._lock:
            if name:
                if name not in self._regions:
                    raise NotFoundError(f"Unable to find system shared memory region: '{name}'")
                return [self._regions[name].status()]
            return [region.status() for region in self._regions.values()]

    def check(self, name: str, offset: int, byte_size: int) -> SystemRegion:
        """The region ``name``, if ``byte_size`` bytes at ``offset`` lie within it."""
        region = self._regions.get(name)
        if region is None:
            raise NotFoundError(f"Unable to find system shared memory region: '{name}'")
        if offset < 0 or offset + byte_size > region.byte_size:
            raise InvalidArgumentError(
                f"Invalid offset + byte size for shared memory region: '{name}'"
            )
        return region

    def read(self, name: str, offset: int, byte_size: int) -> bytearray:
        """A copy of ``byte_size`` bytes at ``offset`` within the region."""
        with self._lock:
            region = self.check(name, offset, byte_size)
            try:
                data = bytearray(byte_size)
            except MemoryError:
                raise InternalError(
                    f"unable to allocate {byte_size} bytes for an input from shared memory "
                    f"region '{name}'"
                ) from None
            read = os.preadv(region.fd, [data], region.offset + offset) if byte_size else 0
        if read != byte_size:
            raise _shrunk(name)
        return data

    def write(self, name: str, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` within the region."""
        with self._lock:
            region = self.check(name, offset, len(data))
            start = region.offset + offset
            if os.fstat(region.fd).st_size < start + len(data):
                raise _shrunk(name)
            os.pwrite(region.fd, data, start)

    def input_tensor(
        self, name: str, datatype: DataType, shape: list[int], params: dict[str, Any]
    ) -> Tensor:
        """An input tensor read from the region its parameters name."""
        region = params["shared_memory_region"]
        offset = int(params.get("shared_memory_offset", 0))
        byte_size = int(params["shared_memory_byte_size"])
        return Tensor.from_buffer(name, datatype, shape, self.read(region, offset, byte_size))

    def write_output(self, tensor: Tensor, params: dict[str, Any]) -> Tensor:
        """Copy an output into the region its request named; the returned tensor carries the
        region parameters in place of data for the frontend."""
        region = params["shared_memory_region"]
        offset = int(params.get("shared_memory_offset", 0))
        byte_size = int(params["shared_memory_byte_size"])
        data = tensor.to_bytes()
        if len(data) > byte_size:
            raise InvalidArgumentError(
                f"shared memory size specified with the request for output '{tensor.name}' "
                f"({byte_size} bytes) should be at least {len(data)} bytes to hold the results"
            )
        self.write(region, offset, data)
        return Tensor(
            tensor.name,
            tensor.data,
            tensor.datatype,
            {
                "shared_memory_region": region,
                "shared_memory_offset": offset,
                "shared_memory_byte_size": len(data),
            },
        )


class CudaSharedMemoryManager:
    """CUDA IPC regions. Without a GPU facility installed every call is UNSUPPORTED."""

    def _unsupported(self) -> UnsupportedError:
        return UnsupportedError("CUDA shared memory is not supported: no GPU support is available")

    def register(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        raise self._unsupported()

    def unregister(self, name: str = "") -> None:
        raise self._unsupported()

    def status(self, name: str = "") -> list[dict[str, Any]]:
        raise self._unsupported()


def _shrunk(name: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"shared memory region '{name}' is smaller than when it was registered: its file was "
        "truncated"
    )


def is_shared_memory(params: dict[str, Any]) -> bool:
    return "shared_memory_region" in params


__all__ = ["CudaSharedMemoryManager", "SystemSharedMemoryManager", "is_shared_memory"]
