"""The messages between the server and a model process, and how they are framed.

Two socket pairs connect the server and each model process:

- the **control** channel carries calls the model process's main thread answers in order
  (load, auto-complete, initialize, execute, finalize): the server's instance thread sends
  them and reads the replies in the same order, with several execute calls under way at once
  (``process.PIPELINE_DEPTH``) so that the model process need not wait for the server;
- the **events** channel carries everything that happens beside those calls: responses a
  decoupled model sends (from any thread), log records, custom-metric operations, readiness
  probes, cancellations, and the replies to the model process's own calls (metric lookups).

A message is a tuple whose first item is one of the tags below, pickled and preceded by its
length (4 bytes, little-endian). Messages hold metadata only: tensor data travels through the
shared-memory arenas (:mod:`nereid_python.shm`), messages carry where it lies. The exception
is BLS: a BLS request's inputs and its responses' outputs travel pickled in the BLS messages
(numpy arrays pickle as one copy of their buffer), since they go to and come from any model.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from typing import Any

try:  # libc's send and recv through ctypes.PyDLL keep the GIL: see Channel.send_quick
    import ctypes

    _libc = ctypes.PyDLL(None)
    _libc_send = _libc.send
    _libc_send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    _libc_send.restype = ctypes.c_ssize_t
    _libc_recv = _libc.recv
    _libc_recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _libc_recv.restype = ctypes.c_ssize_t
    _QUICK_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
    _READ_SIZE = 1 << 16
except (ImportError, AttributeError, OSError, TypeError):  # pragma: no cover - not on Linux
    _libc_send = _libc_recv = None

_LENGTH = struct.Struct("<I")
_PROTOCOL = pickle.HIGHEST_PROTOCOL

# control: server -> model process
LOAD = 1  # (LOAD, settings dict)
AUTO_COMPLETE = 2  # (AUTO_COMPLETE, config dict, model name)
INITIALIZE = 3  # (INITIALIZE, args, decoupled, log level)
EXECUTE = 4  # (EXECUTE, log level, [request descriptor, ...])
FINALIZE = 5  # (FINALIZE,)
# control: model process -> server
OK = 10  # (OK, value, events)
ERROR = 11  # (ERROR, kind name, message, events)
DONE = 12  # (DONE, [(rid, final, payload), ...], events)
# events: model process -> server
RESPONSE = 20  # (RESPONSE, rid, final, payload)
LOG = 21  # (LOG, logger, level, pathname, lineno, function, message, exc_text, thread)
METRIC_FAMILY = 22  # (METRIC_FAMILY, call, name, description, kind) -> REPLY family id
METRIC = 23  # (METRIC, call, family id, labels, buckets) -> REPLY metric id
METRIC_OP = 24  # (METRIC_OP, metric id, method name, value)
METRIC_GET = 25  # (METRIC_GET, call, metric id) -> REPLY value
READY_STATE = 26  # (READY_STATE, token, ready)
BLS = 27  # (BLS, call, request (bls.request_wire), outer rids): responses come as BLS_RESPONSE
MODEL_CONTROL = 28  # (MODEL_CONTROL, call, operation, args) -> REPLY
# events: server -> model process
CANCEL = 30  # (CANCEL, rid)
READY_PROBE = 31  # (READY_PROBE, token)
REPLY = 32  # (REPLY, call, ok, value or error message)
BLS_RESPONSE = 33  # (BLS_RESPONSE, call, final, response (bls.response_wire))


class Channel:
    """One end of a socket pair: framed, pickled messages. ``send`` may be called from any
    thread; ``recv`` from one thread at a time."""

    __slots__ = ("_area", "_arrived", "_buffer", "_lock", "_timeout", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._timeout: float | None = None
        self._area: Any = None  # read_arrived's buffer, made on first use
        self._arrived = False  # read_arrived saw the end of the stream

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, _PROTOCOL)
        data = _LENGTH.pack(len(data)) + data
        with self._lock:
            self.sock.sendall(data)

    def send_quick(self, message: Any) -> None:
        """:meth:`send` without letting go of the GIL when the socket takes the message at
        once (the usual case for a small one): ``socket.send`` releases the GIL around the
        system call, and in a busy server getting it back costs a wait for the event loop's
        thread, on every request. Only for a thread that is the channel's one sender."""
        data = pickle.dumps(message, _PROTOCOL)
        data = _LENGTH.pack(len(data)) + data
        if _libc_send is not None:
            sent = _libc_send(self.sock.fileno(), data, len(data), _QUICK_FLAGS)
            if sent == len(data):
                return
            if sent > 0:
                data = data[sent:]
        self.sock.sendall(data)

    def send_many(self, messages: list[Any]) -> None:
        if not messages:
            return
        parts = []
        for message in messages:
            data = pickle.dumps(message, _PROTOCOL)
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        data = b"".join(parts)
        with self._lock:
            self.sock.sendall(data)

    def read_arrived(self) -> None:
        """Read what has arrived without waiting for more, and without letting go of the GIL
        (as :meth:`send_quick` writes): :meth:`has_message` then tells whether :meth:`recv`
        returns at once."""
        if _libc_recv is None:  # pragma: no cover - no ctypes: answers wait for recv
            return
        area = self._area
        if area is None:
            area = self._area = ctypes.create_string_buffer(_READ_SIZE)
        got = _libc_recv(self.sock.fileno(), area, _READ_SIZE, socket.MSG_DONTWAIT)
        if got > 0:
            self._buffer += ctypes.string_at(area, got)
        elif got == 0:
            self._arrived = True  # the peer has gone: recv raises EOFError at once

    def has_message(self) -> bool:
        """Whether :meth:`recv` returns at once, from what has been read already."""
        if self._arrived:
            return True
        buffer = self._buffer
        have = len(buffer)
        return have >= 4 and have >= 4 + _LENGTH.unpack_from(buffer)[0]

    def recv(self, timeout: float | None = None) -> Any:
        """The next message; EOFError when the peer has gone, TimeoutError after ``timeout``
        seconds (the channel is then unusable)."""
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout
        buffer = self._buffer
        if not buffer:  # the common case: one whole message per read
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            have = len(chunk)
            if have >= 4:
                end = 4 + _LENGTH.unpack_from(chunk)[0]
                if have == end:
                    return pickle.loads(memoryview(chunk)[4:])
            buffer += chunk
        while True:
            have = len(buffer)
            if have >= 4:
                end = 4 + _LENGTH.unpack_from(buffer)[0]
                if have >= end:
                    with memoryview(buffer) as view:
                        message = pickle.loads(view[4:end])
                    del buffer[:end]
                    return message
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            buffer += chunk

    def shutdown(self) -> None:
        """Wake a thread blocked in :meth:`recv` (it gets EOFError) and refuse further sends."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.shutdown()
        self.sock.close()
