"""Shared-memory arenas that carry tensors between the server and a model process.

Each direction has its own arena, owned by the side that writes into it: the server writes
request inputs into the instance's input arena, the model process writes response outputs into
its output arena. An arena is a list of segments (files in the shared-memory directory,
``/dev/shm`` by default, mapped with ``mmap``); each segment is a ring buffer:

- the writer allocates blocks at the ring's head (one block per request or response, holding
  all its tensors, each 64-byte aligned) and sends the reader the block's position with the
  message that refers to it;
- the reader releases blocks when it is done with them, possibly out of order; the ring's tail
  advances over the released blocks in order and is published in the segment's 64-byte header,
  where the writer reads it to know what space is free again. No message is needed to free.

A block that does not fit in any segment gets a new segment of ``max(growth, size)`` bytes. The
peer maps a segment the first time a message names it, and then unlinks the file: a segment
lives in the directory only between its creation and its first use, so nothing is left behind
when either process dies (whoever is left sweeps the instance's prefix for the rest).

Fixed-size tensors are copied into and out of the arena with ``memcpy``; BYTES tensors use
Triton's serialized form (each element as a 4-byte little-endian length and its bytes). Nothing
here pickles tensor data.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
from typing import Any

import numpy as np

HEADER = 64  # bytes before the ring: the tail (u64) at offset 0
ALIGN = 64
_TAIL = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
BYTES_CODE = 13


class ShmError(Exception):
    """Shared memory could not be made (a missing directory, no room left)."""


def _round(size: int) -> int:
    return (size + ALIGN - 1) & ~(ALIGN - 1)


class Segment:
    """One mapped segment: ``mm`` (the mapping), ``view`` (a memoryview of it)."""

    __slots__ = ("capacity", "mm", "name", "released", "size", "tail", "view")

    def __init__(self, name: str, mm: mmap.mmap, size: int) -> None:
        self.name = name
        self.mm = mm
        self.view = memoryview(mm)
        self.size = size
        self.capacity = size - HEADER
        # Reader side: blocks released out of order, by start -> end; the tail as last written.
        self.released: dict[int, int] = {}
        self.tail = 0

    @classmethod
    def create(cls, directory: str, name: str, size: int) -> Segment:
        """A new segment of ``size`` bytes; its pages are allocated now, so a shared-memory
        file system that is too small fails here with ShmError instead of a SIGBUS later."""
        path = os.path.join(directory, name)
        try:
            stat = os.statvfs(directory)
        except OSError as exc:
            raise ShmError(
                f"cannot use the shared-memory directory '{directory}': {exc.strerror}"
            ) from None
        free = stat.f_bavail * stat.f_frsize
        if size > free:
            raise ShmError(_too_small(directory, size, free))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ShmError(f"cannot create shared memory '{path}': {exc.strerror}") from None
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                    raise ShmError(_too_small(directory, size, free)) from None
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV):
                    raise ShmError(f"cannot allocate shared memory '{path}': {exc}") from None
                os.ftruncate(fd, size)  # a file system without fallocate: sparse file
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return cls(name, mm, size)

    @classmethod
    def attach(cls, directory: str, name: str) -> Segment:
        """Map a segment the peer made, then unlink its file (the mapping stays)."""
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        _unlink(path)
        return cls(name, mm, size)

    # -- reader side -----------------------------------------------------------------------------

    def release(self, start: int, end: int) -> None:
        """The reader is done with the block [start, end): advance the tail over every block
        released in order, and publish it. Called from one thread at a time per segment."""
        if start != self.tail:
            self.released[start] = end
            return
        released = self.released
        while end in released:
            end = released.pop(end)
        self.tail = end
        _TAIL.pack_into(self.mm, 0, end)

    def close(self) -> None:
        try:
            self.view.release()
            self.mm.close()
        except (BufferError, ValueError):
            pass  # arrays over it are still alive; the mapping goes with them


def _too_small(directory: str, size: int, free: int) -> str:
    return (
        f"not enough shared memory in '{directory}': {size} bytes needed, {free} bytes free. "
        "Enlarge it (docker run --shm-size=...), lower "
        "--backend-config=python,shm-default-byte-size=<bytes>, or point "
        "--backend-config=python,shm-dir=<directory> at a larger tmpfs"
    )


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class Arena:
    """The writer's side: segments it made, each a ring; :meth:`alloc` places a block.

    Thread-safe (a model's threads write responses concurrently).
    """

    def __init__(self, directory: str, prefix: str, default_size: int, growth: int) -> None:
        self.directory = directory
        self.prefix = prefix
        self.default_size = max(default_size, HEADER + ALIGN)
        self.growth = max(growth, ALIGN)
        self.segments: list[Segment] = []
        self._heads: list[int] = []
        self._serial = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Make the first segment (raises ShmError)."""
        with self._lock:
            self._add(self.default_size)

    def _add(self, size: int) -> int:
        self._serial += 1
        segment = Segment.create(self.directory, f"{self.prefix}{self._serial}", size)
        self.segments.append(segment)
        self._heads.append(0)
        return len(self.segments) - 1

    def alloc(self, nbytes: int) -> tuple[Segment, int, int, int]:
        """A block of ``nbytes``: (segment, start, end, offset of the data in the segment)."""
        nbytes = _round(max(nbytes, 1))
        with self._lock:
            for index in range(len(self.segments) - 1, -1, -1):
                placed = self._place(index, nbytes)
                if placed is not None:
                    return placed
            index = self._add(max(self.growth, nbytes + HEADER))
            placed = self._place(index, nbytes)
            assert placed is not None
            return placed

    def _place(self, index: int, nbytes: int) -> tuple[Segment, int, int, int] | None:
        segment = self.segments[index]
        capacity = segment.capacity
        if nbytes > capacity:
            return None
        head = self._heads[index]
        (tail,) = _TAIL.unpack_from(segment.mm, 0)
        offset = head % capacity
        pad = capacity - offset if offset + nbytes > capacity else 0
        if head + pad + nbytes - tail > capacity:
            return None
        end = head + pad + nbytes
        self._heads[index] = end
        return segment, head, end, HEADER + (head + pad) % capacity

    def close(self) -> None:
        with self._lock:
            for segment in self.segments:
                _unlink(os.path.join(self.directory, segment.name))
                segment.close()
            self.segments = []
            self._heads = []


class Mapped:
    """The reader's side: segments the peer made, mapped on first sight."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.segments: dict[str, Segment] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Segment:
        segment = self.segments.get(name)
        if segment is None:
            with self._lock:
                segment = self.segments.get(name)
                if segment is None:
                    segment = self.segments[name] = Segment.attach(self.directory, name)
        return segment

    def close(self) -> None:
        for segment in self.segments.values():
            segment.close()
        self.segments = {}


# -- tensors ---------------------------------------------------------------------------------------


def serialize_bytes(array: np.ndarray) -> bytes:
    """Triton's BYTES form: each element as a 4-byte little-endian length and its bytes."""
    parts: list[bytes] = []
    append = parts.append
    pack = _LENGTH.pack
    for item in array.reshape(-1):
        data = (
            item
            if isinstance(item, bytes)
            else (item.encode() if isinstance(item, str) else bytes(item))
        )
        append(pack(len(data)))
        append(data)
    return b"".join(parts)


def deserialize_bytes(view: memoryview, count: int) -> np.ndarray:
    """``count`` elements of a serialized BYTES tensor, as a 1-D object array of bytes."""
    items: list[bytes] = []
    append = items.append
    unpack = _LENGTH.unpack_from
    offset = 0
    for _ in range(count):
        (length,) = unpack(view, offset)
        offset += 4
        append(bytes(view[offset : offset + length]))
        offset += length
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def prepare(arrays: list[tuple[str, int, np.ndarray]]) -> tuple[int, list[Any]]:
    """Sizes for a block: (total bytes, [(name, code, array or serialized bytes, nbytes)])."""
    total = 0
    staged = []
    for name, code, array in arrays:
        if code == BYTES_CODE:
            data: Any = serialize_bytes(array)
            nbytes = len(data)
        else:
            data = array
            nbytes = array.nbytes
        staged.append((name, code, data, nbytes, array.shape))
        total += _round(nbytes)
    return total, staged


def write(segment: Segment, offset: int, staged: list[Any]) -> list[tuple]:
    """Copy staged tensors into ``segment`` from ``offset``; returns their descriptors
    ``(name, code, shape, offset, nbytes)``."""
    view = segment.view
    descriptors = []
    for name, code, data, nbytes, shape in staged:
        if nbytes:
            if isinstance(data, bytes):
                view[offset : offset + nbytes] = data
            else:
                _copy_array(view, offset, data, nbytes)
        descriptors.append((name, code, shape, offset, nbytes))
        offset += _round(nbytes)
    return descriptors


def _copy_array(view: memoryview, offset: int, array: np.ndarray, nbytes: int) -> None:
    if array.flags.c_contiguous:
        try:
            view[offset : offset + nbytes] = memoryview(array).cast("B")
            return
        except (TypeError, ValueError, NotImplementedError):
            pass  # a dtype without a buffer format (bfloat16): numpy copies it below
    target = np.frombuffer(view, dtype=array.dtype, count=array.size, offset=offset)
    target.reshape(array.shape)[...] = array


def read_view(segment: Segment, dtype: np.dtype, shape: tuple, offset: int, nbytes: int):
    """A read-only array over a fixed-size tensor in ``segment`` (no copy)."""
    count = nbytes // dtype.itemsize if dtype.itemsize else 0
    array = np.frombuffer(segment.view, dtype=dtype, count=count, offset=offset).reshape(shape)
    array.flags.writeable = False
    return array


def read_copy(segment: Segment, dtype: np.dtype, shape: tuple, offset: int, nbytes: int):
    """A private copy of a fixed-size tensor in ``segment``."""
    count = nbytes // dtype.itemsize if dtype.itemsize else 0
    return (
        np.frombuffer(segment.view, dtype=dtype, count=count, offset=offset).reshape(shape).copy()
    )


def read_bytes(segment: Segment, shape: tuple, offset: int, nbytes: int) -> np.ndarray:
    count = 1
    for dim in shape:
        count *= dim
    return deserialize_bytes(segment.view[offset : offset + nbytes], count).reshape(shape)


def sweep(directory: str, prefix: str) -> int:
    """Unlink every file in ``directory`` whose name starts with ``prefix``; how many."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix):
            _unlink(os.path.join(directory, name))
            removed += 1
    return removed
