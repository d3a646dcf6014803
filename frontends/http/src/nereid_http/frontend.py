"""The HTTP/REST frontend: an aiohttp server on the Nereid server's event loop.

A codec and a router over the kernel's :class:`~nereid.api.InferenceService`: every request is
decoded, handed to the service and its answer encoded; models, shared memory, classification,
validation and statistics live in the kernel.

It runs on aiohttp's low-level server (``web.Server`` behind a ``ServerRunner`` and a
``TCPSite``) inside the server's own event loop. Routing is a split of the path and a few
comparisons, so the inference path pays for no regular expression, no match info and no
middleware chain.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from nereid.config import config_to_json
from nereid.errors import (
    InternalError,
    InvalidArgumentError,
    NereidError,
    UnavailableError,
    UnsupportedError,
)
from nereid.observers import TRACE_CARRIER_KEY, TRACE_KEY

from . import codec
from .errors import error_body, status_of
from .restricted import parse_restricted_apis

log = logging.getLogger("nereid.http")

JSON_TYPE = "application/json"
_JSON = {"Content-Type": JSON_TYPE}
_SSE = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_DECOUPLED_MESSAGE = "HTTP end point doesn't support models with decoupled transaction policy"
_GENERATE_ONE_MESSAGE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that "
    "generates various number of responses"
)
_SHM_ACTIONS = ("status", "register", "unregister")

Handler = Callable[..., Awaitable[web.StreamResponse]]
_now = time.monotonic_ns


def create_frontend(options: argparse.Namespace) -> HttpFrontend | None:
    """The ``http`` frontend for the server's options, or ``None`` with ``--allow-http=false``."""
    if not getattr(options, "allow_http", True):
        return None
    return HttpFrontend(options)


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(doc), status=status, headers=_JSON)


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=error_body(message), status=status, headers=headers or _JSON)


def _method_not_allowed() -> web.Response:
    return _error("Method Not Allowed", 405)


def _ok() -> web.Response:
    return web.Response(status=200, headers=_JSON)


def _version(text: str) -> int:
    return int(text) if text else -1


def _name(segment: str) -> str:
    return unquote(segment) if "%" in segment else segment


class _UnsupportedEncoding(UnsupportedError):
    headers = {"Accept-Encoding": "gzip, deflate", **_JSON}


def _accept_encoding(header: str) -> str | None:
    """The response encoding ``Accept-Encoding`` prefers among gzip and deflate (Triton's
    rules: the highest q wins, identity when nothing better is offered)."""
    best, weight = None, 0.0
    for part in header.split(","):
        kind, _, params = part.strip().partition(";")
        kind = kind.strip()
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        if kind in ("gzip", "deflate", "identity") and q > weight:
            best, weight = kind, q
    return best if best in ("gzip", "deflate") else None


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        return compressor.compress(body) + compressor.flush()
    return zlib.compress(body)


class HttpFrontend:
    """The aiohttp application behind ``--http-port``. ``port`` is the bound port once
    started (useful with ``--http-port 0``)."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.host = options.http_address
        self.port: int = options.http_port
        self.max_input_size: int = options.http_max_input_size
        self.allow_client_shm: bool = bool(getattr(options, "allow_client_shm", False))
        self.restrictions = parse_restricted_apis(options.http_restricted_api)
        pattern = options.http_header_forward_pattern
        try:
            self.forward = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise InvalidArgumentError(
                f"invalid --http-header-forward-pattern '{pattern}': {exc}"
            ) from None
        self._restrict_inference = self.restrictions.get("inference")
        self._runner: web.ServerRunner | None = None
        self.api: Any = None
        self._model_actions: dict[str, Handler] = {
            "infer": self._infer,
            "ready": self._model_ready,
            "config": self._model_config,
            "stats": self._model_stats,
            "generate": self._generate,
            "generate_stream": self._generate_stream,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, api: Any) -> None:
        self.api = api
        api.add_extension("binary_tensor_data")
        api.add_extension("generate")
        if self.options.http_thread_count != 8:
            log.info(
                "--http-thread-count=%d is accepted for compatibility and ignored: the HTTP "
                "frontend runs on the server's event loop",
                self.options.http_thread_count,
            )
        # aiohttp's low-level server: one handler that routes by itself. It spares every
        # request the Application's router, match info and middleware chain (about 12% of the
        # server's CPU per inference request in benchmarks/http_overhead.py).
        loop = asyncio.get_running_loop()
        max_size = self.max_input_size

        def make_request(message, payload, protocol, writer, task) -> web.BaseRequest:
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=max_size
            )

        server = web.Server(
            self._handle,
            request_factory=make_request,
            handler_cancellation=True,  # a client that goes away cancels its request
            auto_decompress=False,  # Content-Encoding is decoded here, within the size limit
            access_log=None,
        )
        runner = web.ServerRunner(
            server,
            handle_signals=False,
            shutdown_timeout=float(getattr(self.options, "exit_timeout_secs", 30.0)),
        )
        await runner.setup()
        site = web.TCPSite(
            runner,
            self.host,
            self.port,
            backlog=1024,
            reuse_port=True if self.options.reuse_http_port else None,
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UnavailableError(
                f"Socket '{self.host}:{self.port}' already in use ({exc.strerror or exc})"
            ) from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("Started HTTPService at %s:%d", self.host, self.port)

    async def stop(self, grace: float) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # In-flight requests get ``grace`` seconds (aiohttp takes the timeout at construction).
        runner._shutdown_timeout = grace
        await runner.cleanup()

    # -- dispatch --------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path
        query = path.find("?")
        if query >= 0:
            path = path[:query]
        try:
            route = self._route(path)
            if route is None:
                return _error("Not Found", 404)
            handler, args = route
            return await handler(request, *args)
        except NereidError as exc:
            return _error(exc.message, status_of(exc), getattr(exc, "headers", None))
        except (ConnectionError, web.HTTPException):
            raise
        except Exception as exc:
            log.exception("HTTP %s %s failed", request.method, path)
            return _error(f"internal error: {str(exc) or type(exc).__name__}", 500)

    def _route(self, path: str) -> tuple[Handler, tuple[Any, ...]] | None:
        parts = path.split("/")
        n = len(parts)
        if n < 2 or parts[0] or parts[1] != "v2":
            return None
        if n == 2:
            return self._server_metadata, ()
        section = parts[2]
        if section == "models":
            if n == 4 and parts[3] == "stats":
                return self._model_stats, ("", "")
            if n < 4 or not parts[3]:
                return None
            name = _name(parts[3])
            index, version = 4, ""
            if n >= 6 and parts[4] == "versions":
                version = parts[5]
                if not (version.isascii() and version.isdigit()):
                    return None
                index = 6
            rest = n - index
            if rest == 0:
                return self._model_metadata, (name, version)
            if rest == 1:
                handler = self._model_actions.get(parts[index])
                return (handler, (name, version)) if handler is not None else None
            if rest == 2 and parts[index:] == ["trace", "setting"] and not version:
                return self._trace, (name,)
            return None
        if section == "health":
            if n == 4 and parts[3] in ("live", "ready"):
                return self._health, (parts[3],)
            return None
        if section in ("systemsharedmemory", "cudasharedmemory"):
            rest_parts = parts[3:]
            region = ""
            if len(rest_parts) == 3 and rest_parts[0] == "region" and rest_parts[1]:
                region = _name(rest_parts[1])
                rest_parts = rest_parts[2:]
            if len(rest_parts) == 1 and rest_parts[0] in _SHM_ACTIONS:
                handler = self._system_shm if section[0] == "s" else self._cuda_shm
                return handler, (region, rest_parts[0])
            return None
        if section == "repository":
            return self._route_repository(parts[3:])
        if section == "logging" and n == 3:
            return self._logging, ()
        if section == "trace" and n == 4 and parts[3] == "setting":
            return self._trace, ("",)
        return None

    def _route_repository(self, rest: list[str]) -> tuple[Handler, tuple[Any, ...]] | None:
        # index | models/<m>/(load|unload), optionally after a repository name
        repo = ""
        if (len(rest) == 2 and rest[1] == "index") or (len(rest) == 4 and rest[1] == "models"):
            repo, rest = _name(rest[0]), rest[1:]
            if not repo:
                return None
        if rest == ["index"]:
            return self._repository_index, (repo,)
        if len(rest) == 3 and rest[0] == "models" and rest[1] and rest[2] in ("load", "unload"):
            return self._repository_control, (repo, _name(rest[1]), rest[2])
        return None

    def _forbidden(self, request: web.BaseRequest, group: str) -> web.Response | None:
        restriction = self.restrictions.get(group)
        if restriction is None:
            return None
        return self._check_restriction(request, restriction)

    @staticmethod
    def _check_restriction(
        request: web.BaseRequest, restriction: tuple[str, str]
    ) -> web.Response | None:
        key, expected = restriction
        if request.headers.get(key) == expected:
            return None
        return _error(f"This API is restricted, expecting header '{key}'", 403)

    # -- bodies ----------------------------------------------------------------------------------

    def _too_large(self, size: int | str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"request body of {size} bytes exceeds the maximum allowed value of "
            f"{self.max_input_size} bytes; use --http-max-input-size to increase the limit"
        )

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The request body, decompressed per ``Content-Encoding``, within
        ``--http-max-input-size``."""
        length = request.content_length
        if length is not None and length > self.max_input_size:
            raise self._too_large(length)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large(f"more than {self.max_input_size}") from None
        encoding = request.headers.get("Content-Encoding")
        if encoding is not None and encoding != "identity":
            body = self._decompress(body, encoding)
        return body

    def _decompress(self, body: bytes, encoding: str) -> bytes:
        if encoding == "gzip":
            wbits = 31
        elif encoding == "deflate":
            wbits = 15 if body[:1] == b"\x78" else -15  # zlib stream, else raw deflate
        else:
            raise _UnsupportedEncoding("Unsupported compression type")
        decompressor = zlib.decompressobj(wbits)
        try:
            data = decompressor.decompress(body, self.max_input_size + 1)
        except zlib.error as exc:
            raise InvalidArgumentError(
                f"failed to decompress the request body ({encoding}): {exc}"
            ) from None
        if len(data) > self.max_input_size:
            raise self._too_large(f"more than {self.max_input_size} (decompressed)")
        if not decompressor.eof:
            raise InvalidArgumentError(
                f"failed to decompress the request body ({encoding}): the data is truncated"
            )
        return data

    async def _read_json(self, request: web.BaseRequest, *, optional: bool = False) -> Any:
        body = await self._read_body(request)
        if not body and optional:
            return {}
        doc = codec.loads(body)
        if type(doc) is not dict:
            raise InvalidArgumentError(
                "failed to parse the request JSON buffer: expected an object"
            )
        return doc

    # -- server ----------------------------------------------------------------------------------

    async def _health(self, request: web.BaseRequest, kind: str) -> web.StreamResponse:
        if (denied := self._forbidden(request, "health")) is not None:
            return denied
        if request.method != "GET":
            return _method_not_allowed()
        ok = self.api.is_live() if kind == "live" else self.api.is_ready()
        return web.Response(status=200 if ok else 400)

    async def _server_metadata(self, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._forbidden(request, "metadata")) is not None:
            return denied
        if request.method != "GET":
            return _method_not_allowed()
        return _json(self.api.server_metadata())

    async def _logging(self, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._forbidden(request, "logging")) is not None:
            return denied
        if request.method == "POST":
            changes = await self._read_json(request)
            if changes.get("log_file") is not None:
                raise UnsupportedError(
                    "log file location can not be updated through network protocol"
                )
            changes.pop("log_file", None)
            self.api.log_settings.update(changes)
        elif request.method != "GET":
            return _method_not_allowed()
        return _json(self.api.log_settings.get())

    async def _trace(self, request: web.BaseRequest, model: str) -> web.StreamResponse:
        if (denied := self._forbidden(request, "trace")) is not None:
            return denied
        if request.method not in ("GET", "POST"):
            return _method_not_allowed()
        tracer = self.api.tracer
        if tracer is None:
            raise UnsupportedError("trace is not supported by this server")
        if request.method == "POST":
            return _json(tracer.update_settings(model, await self._read_json(request)))
        return _json(tracer.get_settings(model))

    # -- models ----------------------------------------------------------------------------------

    async def _model_metadata(
        self, request: web.BaseRequest, name: str, version: str
    ) -> web.StreamResponse:
        if (denied := self._forbidden(request, "metadata")) is not None:
            return denied
        if request.method != "GET":
            return _method_not_allowed()
        return _json(self.api.model_metadata(name, _version(version)))

    async def _model_ready(
        self, request: web.BaseRequest, name: str, version: str
    ) -> web.StreamResponse:
        if (denied := self._forbidden(request, "health")) is not None:
            return denied
        if request.method != "GET":
            return _method_not_allowed()
        if self.api.model_ready(name, _version(version)):
            return web.Response(status=200)
        return _error("Model version not ready", 400)

    async def _model_config(
        self, request: web.BaseRequest, name: str, version: str
    ) -> web.StreamResponse:
        if (denied := self._forbidden(request, "model-config")) is not None:
            return denied
        if request.method != "GET":
            return _method_not_allowed()
        return _json(config_to_json(self.api.model_config(name, _version(version))))

    async def _model_stats(
        self, request: web.BaseRequest, name: str, version: str
    ) -> web.StreamResponse:
        if (denied := self._forbidden(request, "statistics")) is not None:
            return denied
        if request.method != "GET":
            return _method_not_allowed()
        return _json({"model_stats": self.api.model_statistics(name, _version(version))})

    # -- repository ------------------------------------------------------------------------------

    async def _repository_index(self, request: web.BaseRequest, repo: str) -> web.StreamResponse:
        if (denied := self._forbidden(request, "model-repository")) is not None:
            return denied
        if request.method != "POST":
            return _method_not_allowed()
        if repo:
            raise UnsupportedError("'repository_name' specification is not supported")
        doc = await self._read_json(request, optional=True)
        ready = doc.get("ready", False)
        if type(ready) is not bool:
            raise InvalidArgumentError("Unable to parse 'ready': expected a boolean")
        return _json(self.api.repository_index(ready))

    async def _repository_control(
        self, request: web.BaseRequest, repo: str, name: str, action: str
    ) -> web.StreamResponse:
        if (denied := self._forbidden(request, "model-repository")) is not None:
            return denied
        if request.method != "POST":
            return _method_not_allowed()
        if repo:
            raise UnsupportedError("'repository_name' specification is not supported")
        doc = await self._read_json(request, optional=True)
        params = doc.get("parameters", {})
        if type(params) is not dict:
            raise InvalidArgumentError("Unable to parse 'parameters': expected an object")
        if action == "load":
            config, files = _load_parameters(params)
            await self.api.load_model(name, config, files)
        else:
            dependents = params.get("unload_dependents", False)
            if type(dependents) is not bool:
                raise InvalidArgumentError(
                    "Unable to parse 'unload_dependents': expected a boolean"
                )
            await self.api.unload_model(name, dependents)
        return _ok()

    # -- shared memory ---------------------------------------------------------------------------

    async def _system_shm(
        self, request: web.BaseRequest, region: str, action: str
    ) -> web.StreamResponse:
        shm = self.api.system_shm
        return await self._shm(
            request, region, action, shm, "system", self._register_system, self.allow_client_shm
        )

    async def _cuda_shm(
        self, request: web.BaseRequest, region: str, action: str
    ) -> web.StreamResponse:
        cuda = self.api.cuda_shm
        return await self._shm(request, region, action, cuda, "cuda", self._register_cuda, True)

    async def _shm(
        self,
        request: web.BaseRequest,
        region: str,
        action: str,
        manager: Any,
        label: str,
        register: Callable[[str, dict[str, Any]], None],
        allowed: bool,
    ) -> web.StreamResponse:
        """Status, register and unregister of a shared-memory kind; ``register`` reads the
        kind's own register fields from the request JSON."""
        if (denied := self._forbidden(request, "shared-memory")) is not None:
            return denied
        if request.method != ("GET" if action == "status" else "POST"):
            return _method_not_allowed()
        if action == "status":
            return _json(manager.status(region))
        if not allowed:
            raise UnavailableError(codec.SHM_DISABLED_MESSAGE)
        if action == "unregister":
            manager.unregister(region)
        elif not region:
            raise InvalidArgumentError(
                f"'region name' is necessary to register {label} shared memory region"
            )
        else:
            register(region, await self._read_json(request))
        return _ok()

    def _register_system(self, region: str, doc: dict[str, Any]) -> None:
        key = doc.get("key")
        if key is None:
            raise InvalidArgumentError("Shared memory register request has no 'key' field")
        if type(key) is not str:
            raise InvalidArgumentError("Unable to parse 'key': expected a string")
        if "byte_size" not in doc:
            raise InvalidArgumentError("Shared memory register request has no 'byte_size' field")
        byte_size = _uint(doc["byte_size"], "byte_size")
        offset = _uint(doc.get("offset", 0), "offset")
        self.api.system_shm.register(region, key, offset, byte_size)

    def _register_cuda(self, region: str, doc: dict[str, Any]) -> None:
        handle = doc.get("raw_handle")
        b64 = handle.get("b64") if type(handle) is dict else None
        if type(b64) is not str:
            raise InvalidArgumentError("Shared memory register request has no 'raw_handle' field")
        raw = _b64decode(b64, "raw_handle")
        self.api.cuda_shm.register(
            region,
            raw,
            _uint(doc.get("device_id", 0), "device_id"),
            _uint(doc.get("byte_size", 0), "byte_size"),
        )

    # -- inference -------------------------------------------------------------------------------

    def _forward_headers(self, request: web.BaseRequest, parameters: dict[str, Any]) -> None:
        search = self.forward.search  # type: ignore[union-attr]
        for key, value in request.headers.items():
            if search(key):
                parameters[key] = value

    async def _infer(self, request: web.BaseRequest, name: str, version: str) -> web.StreamResponse:
        recv_start = _now()
        restriction = self._restrict_inference
        if restriction is not None and (denied := self._check_restriction(request, restriction)):
            return denied
        if request.method != "POST":
            return _method_not_allowed()
        api = self.api
        model_version = int(version) if version else -1
        model = api.model(name, model_version)
        headers = request.headers
        sse = "text/event-stream" in headers.get("Accept", "")
        if model.decoupled and not sse:
            raise UnsupportedError(_DECOUPLED_MESSAGE)
        body = await self._read_body(request)
        recv_end = _now()
        header_length = headers.get("Inference-Header-Content-Length")
        binary_outputs: dict[str, bool] = {}
        binary_default = False
        shm = api.system_shm if self.allow_client_shm else None
        if header_length is None:
            infer_request, binary_outputs, binary_default = codec.decode_infer_request(
                codec.loads(body), None, name, model_version, shm
            )
        else:
            length = _header_length(header_length, len(body))
            if length == 0:
                infer_request = codec.decode_raw_request(body, model, model_version)
                binary_default = True
            else:
                view = memoryview(body)
                infer_request, binary_outputs, binary_default = codec.decode_infer_request(
                    codec.loads(view[:length]), view[length:], name, model_version, shm
                )
        if self.forward is not None:
            self._forward_headers(request, infer_request.parameters)
        if api.tracer is not None and api.tracer.propagate:
            _trace_carrier(headers, infer_request)
        stream = api.infer(infer_request)
        if sse:
            return await self._stream_events(request, stream, codec.encode_sse_response)
        trace = infer_request.context.get(TRACE_KEY)
        if trace is not None:
            trace.received("HTTP", recv_start, recv_end)
        response = await stream.single()
        payload, json_length = codec.encode_infer_response(response, binary_outputs, binary_default)
        if json_length is None:
            reply_headers = {"Content-Type": JSON_TYPE}
        else:
            reply_headers = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(json_length),
            }
        accept = headers.get("Accept-Encoding")
        if accept is not None and (encoding := _accept_encoding(accept)) is not None:
            payload = _compress(payload, encoding)
            reply_headers["Content-Encoding"] = encoding
        reply = web.Response(body=payload, headers=reply_headers)
        if trace is not None:  # sent here, to time the send
            send_start = _now()
            await reply.prepare(request)
            await reply.write_eof()
            trace.sent(send_start, _now())
        return reply

    async def _stream_events(
        self, request: web.BaseRequest, stream: Any, encode: Callable[[Any], bytes]
    ) -> web.StreamResponse:
        """Every response of ``stream`` as a server-sent event. An error before the first
        response is answered as a JSON error with its status instead."""
        finished = False
        try:
            item = await stream.__anext__()
            if item.error is not None and item.final:
                finished = True
                raise item.error
            reply = web.StreamResponse(status=200, headers=_SSE)
            await reply.prepare(request)
            while True:
                if item.error is not None:
                    await reply.write(codec.sse_event(error_body(item.error.message)))
                elif not item.empty:
                    try:
                        event = encode(item)
                    except NereidError as exc:
                        event = codec.sse_event(error_body(exc.message))
                        await reply.write(event)
                        break
                    await reply.write(event)
                if item.final:
                    finished = True
                    break
                item = await stream.__anext__()
            await reply.write_eof()
            return reply
        finally:
            if not finished:
                stream.cancel()

    async def _generate_request(self, request: web.BaseRequest, name: str, version: str) -> Any:
        if request.method != "POST":
            return None
        model_version = int(version) if version else -1
        model = self.api.model(name, model_version)
        doc = await self._read_json(request)
        infer_request = codec.decode_generate_request(doc, model, model_version)
        if self.forward is not None:
            self._forward_headers(request, infer_request.parameters)
        if self.api.tracer is not None and self.api.tracer.propagate:
            _trace_carrier(request.headers, infer_request)
        return self.api.infer(infer_request)

    async def _generate(
        self, request: web.BaseRequest, name: str, version: str
    ) -> web.StreamResponse:
        if (denied := self._forbidden(request, "inference")) is not None:
            return denied
        stream = await self._generate_request(request, name, version)
        if stream is None:
            return _method_not_allowed()
        answers = []
        async for response in stream:
            if response.error is not None:
                raise response.error
            if not response.empty:
                answers.append(response)
        if len(answers) != 1:
            raise InternalError(_GENERATE_ONE_MESSAGE)
        return web.Response(body=codec.encode_generate_response(answers[0]), headers=_JSON)

    async def _generate_stream(
        self, request: web.BaseRequest, name: str, version: str
    ) -> web.StreamResponse:
        if (denied := self._forbidden(request, "inference")) is not None:
            return denied
        stream = await self._generate_request(request, name, version)
        if stream is None:
            return _method_not_allowed()
        return await self._stream_events(
            request, stream, lambda r: codec.sse_event(codec.encode_generate_response(r))
        )


def _trace_carrier(headers: Any, infer_request: Any) -> None:
    """Attach the client's W3C trace context (``traceparent``, ``tracestate``) for the tracer."""
    parent = headers.get("traceparent")
    if parent is not None:
        carrier = {"traceparent": parent}
        state = headers.get("tracestate")
        if state is not None:
            carrier["tracestate"] = state
        infer_request.context[TRACE_CARRIER_KEY] = carrier


def _header_length(value: str, body_length: int) -> int:
    try:
        length = int(value)
    except ValueError:
        raise InvalidArgumentError(
            f"Unable to parse Inference-Header-Content-Length, got: {value}"
        ) from None
    if length < 0 or length > body_length:
        raise InvalidArgumentError(
            f"inference header size should be in range (0, {body_length}), got: {value}"
        )
    return length


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidArgumentError(f"Unable to parse '{what}': expected a non-negative integer")
    return value


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgumentError(f"failed to decode base64 content of '{what}': {exc}") from None


def _load_parameters(params: dict[str, Any]) -> tuple[str | None, dict[str, bytes] | None]:
    """``config`` and ``file:<version>/<name>`` (base64) parameters of a load request."""
    config = None
    files: dict[str, bytes] = {}
    for key, value in params.items():
        if type(value) is not str:
            raise InvalidArgumentError(f"Unable to parse parameter '{key}': expected a string")
        if key == "config":
            config = value
        elif key.startswith("file:"):
            files[key[5:]] = _b64decode(value, key)
        else:
            raise InvalidArgumentError(
                f"unexpected load parameter '{key}', expecting 'config' or "
                "'file:<version>/<file name>'"
            )
    return config, files or None


__all__ = ["HttpFrontend", "create_frontend"]
