"""Triton's GRPCInferenceService (and ``grpc.health.v1.Health/Check``) over the kernel's
InferenceService: every handler is a codec around one ``api`` call.

Handlers are registered by hand under Triton's method paths
(``/inference.GRPCInferenceService/<Method>``) with the generated messages' (de)serializers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from nereid import InternalError, NereidError, UnavailableError, UnsupportedError
from nereid.observers import TRACE_CARRIER_KEY, TRACE_KEY

from . import codec
from .protos import grpc_service_pb2 as pb
from .protos import health_pb2
from .settings import GrpcSettings, Restriction
from .status import status_code
from .streaming import StreamSession

log = logging.getLogger("nereid.grpc")

SERVICE_NAME = "inference.GRPCInferenceService"
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"

Handler = Callable[[Any, Any], Awaitable[Any]]
_now = time.monotonic_ns

# RPC name -> (request message, response message); ModelStreamInfer is registered apart.
_UNARY: dict[str, tuple[Any, Any]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
    "SystemSharedMemoryStatus": (
        pb.SystemSharedMemoryStatusRequest,
        pb.SystemSharedMemoryStatusResponse,
    ),
    "SystemSharedMemoryRegister": (
        pb.SystemSharedMemoryRegisterRequest,
        pb.SystemSharedMemoryRegisterResponse,
    ),
    "SystemSharedMemoryUnregister": (
        pb.SystemSharedMemoryUnregisterRequest,
        pb.SystemSharedMemoryUnregisterResponse,
    ),
    "CudaSharedMemoryStatus": (pb.CudaSharedMemoryStatusRequest, pb.CudaSharedMemoryStatusResponse),
    "CudaSharedMemoryRegister": (
        pb.CudaSharedMemoryRegisterRequest,
        pb.CudaSharedMemoryRegisterResponse,
    ),
    "CudaSharedMemoryUnregister": (
        pb.CudaSharedMemoryUnregisterRequest,
        pb.CudaSharedMemoryUnregisterResponse,
    ),
    "TraceSetting": (pb.TraceSettingRequest, pb.TraceSettingResponse),
    "LogSettings": (pb.LogSettingsRequest, pb.LogSettingsResponse),
}

_LOG_SETTING_KINDS = {
    "log_info": ("bool_param", "boolean"),
    "log_warning": ("bool_param", "boolean"),
    "log_error": ("bool_param", "boolean"),
    "log_verbose_level": ("uint32_param", "int32"),
    "log_format": ("string_param", "string"),
}


def _duration(target: Any, value: dict[str, int]) -> None:
    target.count = int(value.get("count", 0))
    target.ns = int(value.get("ns", 0))


def _durations(target: Any, values: dict[str, Any]) -> None:
    fields = target.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        if key in fields and isinstance(value, dict):
            _duration(getattr(target, key), value)


class GrpcService:
    """The handlers, bound to one InferenceService and the frontend's settings."""

    def __init__(self, api: Any, settings: GrpcSettings) -> None:
        self.api = api
        self.settings = settings
        self.allow_shm = settings.allow_client_shm
        self.header_forward = settings.header_forward

    # -- registration ------------------------------------------------------------------------

    def generic_handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for name, (request_type, response_type) in _UNARY.items():
            behavior = getattr(self, name)
            if name != "ModelInfer":
                behavior = _guarded(behavior)
            behavior = self._restrict(name, behavior)
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=codec.parser(request_type),
                response_serializer=response_type.SerializeToString,
            )
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self._restrict("ModelStreamInfer", self.ModelStreamInfer),
            request_deserializer=codec.parser(pb.ModelInferRequest),
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        health = {
            "Check": grpc.unary_unary_rpc_method_handler(
                self._restrict("Check", _guarded(self.Check)),
                request_deserializer=codec.parser(health_pb2.HealthCheckRequest),
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            )
        }
        return (
            grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),
            grpc.method_handlers_generic_handler(HEALTH_SERVICE_NAME, health),
        )

    def _restrict(self, name: str, behavior: Handler) -> Handler:
        """Wrap an RPC whose protocol group ``--grpc-restricted-protocol`` restricts."""
        restriction: Restriction | None = self.settings.restricted.get(name)
        if restriction is None:
            return behavior
        header, value = restriction.header, restriction.value
        message = f"This protocol is restricted, expecting header '{header}'"

        async def restricted(request: Any, context: Any) -> Any:
            for key, given in context.invocation_metadata() or ():
                if key == header and given == value:
                    return await behavior(request, context)
            await context.abort(grpc.StatusCode.UNAVAILABLE, message)

        return restricted

    def _forwarded(self, context: Any) -> list[tuple[str, str]]:
        pattern = self.header_forward
        if pattern is None:
            return []
        return [
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str) and pattern.search(key)
        ]

    # -- health --------------------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.api.is_live())

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.api.is_ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        version = codec.parse_version(request.version)
        return pb.ModelReadyResponse(ready=self.api.model_ready(request.name, version))

    async def Check(self, request: Any, context: Any) -> Any:
        status = health_pb2.HealthCheckResponse.ServingStatus
        serving = status.SERVING if self.api.is_ready() else status.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=serving)

    # -- metadata ------------------------------------------------------------------------------

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        meta = self.api.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        version = codec.parse_version(request.version)
        meta = self.api.model_metadata(request.name, version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in meta["inputs"]
            ],
            outputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in meta["outputs"]
            ],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        version = codec.parse_version(request.version)
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(self.api.model_config(request.name, version))
        return response

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        version = codec.parse_version(request.version)
        response = pb.ModelStatisticsResponse()
        for stats in self.api.model_statistics(request.name, version):
            entry = response.model_stats.add(
                name=stats["name"],
                version=str(stats["version"]),
                last_inference=int(stats.get("last_inference", 0)),
                inference_count=int(stats.get("inference_count", 0)),
                execution_count=int(stats.get("execution_count", 0)),
            )
            _durations(entry.inference_stats, stats.get("inference_stats", {}))
            for index, values in stats.get("response_stats", {}).items():
                _durations(entry.response_stats[str(index)], values)
            for batch in stats.get("batch_stats", []):
                item = entry.batch_stats.add(batch_size=int(batch["batch_size"]))
                _durations(item, {k: v for k, v in batch.items() if k != "batch_size"})
            for usage in stats.get("memory_usage", []):
                entry.memory_usage.add(
                    type=str(usage.get("type", "")),
                    id=int(usage.get("id", 0)),
                    byte_size=int(usage.get("byte_size", 0)),
                )
        return response

    # -- inference -----------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        read_start = _now()
        api = self.api
        if request is codec.UNPARSABLE:
            await context.abort(grpc.StatusCode.INTERNAL, codec.UNPARSABLE_MESSAGE)
        try:
            version = codec.parse_version(request.model_version)
            if api.model(request.model_name, version).decoupled:
                raise UnsupportedError(
                    "ModelInfer RPC doesn't support models with decoupled transaction policy"
                )
            forwarded = self._forwarded(context) if self.header_forward is not None else ()
            infer_request, _ = codec.decode_request(
                request, api, self.allow_shm, version, forwarded
            )
            read_end = _now()
            if api.tracer is not None and api.tracer.propagate:
                _trace_carrier(context, infer_request)
            stream = api.infer(infer_request)
        except NereidError as exc:
            await context.abort(status_code(exc), exc.message)
        except Exception as exc:
            await _internal(context, exc)
        trace = infer_request.context.get(TRACE_KEY)
        if trace is not None:
            trace.received("GRPC", read_start, read_end)
        # Cancelling this handler (client gone, deadline passed) cancels the request.
        response = await stream.__anext__()
        error = response.error
        if error is not None:
            await context.abort(status_code(error), error.message)
        try:
            if trace is None:
                return codec.encode_response(response)
            # the send as far as this handler sees it: until the message is handed to gRPC
            send_start = _now()
            reply = codec.encode_response(response)
            trace.sent(send_start, _now())
            return reply
        except NereidError as exc:
            await context.abort(status_code(exc), exc.message)

    async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> None:
        session = StreamSession(self, context)
        await session.run(request_iterator)

    # -- model repository ----------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        if request.repository_name:
            raise UnsupportedError("'repository_name' specification is not supported")
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(
                    name=row["name"],
                    version=str(row.get("version", "")),
                    state=str(row.get("state", "")),
                    reason=str(row.get("reason", "")),
                )
                for row in self.api.repository_index(request.ready)
            ]
        )

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        if request.repository_name:
            raise UnsupportedError("'repository_name' specification is not supported")
        config: str | None = None
        files: dict[str, bytes] = {}
        for key, param in request.parameters.items():
            kind = param.WhichOneof("parameter_choice")
            if key == "config":
                if kind != "string_param":
                    raise codec.InvalidArgumentError(
                        f"invalid value type for load parameter '{key}', expected string_param."
                    )
                config = param.string_param
            elif key.startswith("file:"):
                if kind != "bytes_param":
                    raise codec.InvalidArgumentError(
                        f"invalid value type for load parameter '{key}', expected bytes_param."
                    )
                files[key[len("file:") :]] = param.bytes_param
            else:
                raise codec.InvalidArgumentError(f"unrecognized load parameter '{key}'.")
        await self.api.load_model(request.model_name, config=config, files=files or None)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        if request.repository_name:
            raise UnsupportedError("'repository_name' specification is not supported")
        unload_dependents = False
        if "unload_dependents" in request.parameters:
            param = request.parameters["unload_dependents"]
            if param.WhichOneof("parameter_choice") != "bool_param":
                raise codec.InvalidArgumentError(
                    "invalid value type for 'unload_dependents' parameter, expected bool_param."
                )
            unload_dependents = param.bool_param
        await self.api.unload_model(request.model_name, unload_dependents)
        return pb.RepositoryModelUnloadResponse()

    # -- shared memory -------------------------------------------------------------------------

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.api.system_shm.status(request.name):
            response.regions[region["name"]].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region["name"],
                    key=region["key"],
                    offset=int(region["offset"]),
                    byte_size=int(region["byte_size"]),
                )
            )
        return response

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        if not self.allow_shm:
            raise UnavailableError(codec.SHM_DISABLED_MESSAGE)
        self.api.system_shm.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self.api.system_shm.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        response = pb.CudaSharedMemoryStatusResponse()
        for region in self.api.cuda_shm.status(request.name):
            response.regions[region["name"]].CopyFrom(
                pb.CudaSharedMemoryStatusResponse.RegionStatus(
                    name=region["name"],
                    device_id=int(region.get("device_id", 0)),
                    byte_size=int(region.get("byte_size", 0)),
                )
            )
        return response

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        self.api.cuda_shm.register(
            request.name, request.raw_handle, request.device_id, request.byte_size
        )
        return pb.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self.api.cuda_shm.unregister(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- settings ------------------------------------------------------------------------------

    async def TraceSetting(self, request: Any, context: Any) -> Any:
        tracer = self.api.tracer
        if tracer is None:  # as a tritonserver built without tracing answers
            raise UnavailableError("the server does not support trace")
        if request.settings:
            # an entry with no value clears that setting
            changes = {key: list(value.value) or None for key, value in request.settings.items()}
            settings = tracer.update_settings(request.model_name, changes)
        else:
            settings = tracer.get_settings(request.model_name)
        response = pb.TraceSettingResponse()
        for key, value in settings.items():
            response.settings[key].value.extend(value if isinstance(value, list) else [value])
        return response

    async def LogSettings(self, request: Any, context: Any) -> Any:
        changes: dict[str, Any] = {}
        for key, setting in request.settings.items():
            if key == "log_file":
                raise UnsupportedError(
                    "log file location can not be updated through network protocol"
                )
            kind = setting.WhichOneof("parameter_choice")
            expected = _LOG_SETTING_KINDS.get(key)
            if expected is not None and kind != expected[0]:
                raise codec.InvalidArgumentError(f"expect {expected[1]} for '{key}'")
            if key == "log_format" and setting.string_param not in ("default", "ISO8601"):
                raise codec.InvalidArgumentError(
                    f"invalid argument for log_format, got: {setting.string_param}"
                )
            changes[key] = None if kind is None else getattr(setting, kind)
        settings = self.api.log_settings.update(changes) if changes else self.api.log_settings.get()
        response = pb.LogSettingsResponse()
        for key, value in settings.items():
            target = response.settings[key]
            if isinstance(value, bool):
                target.bool_param = value
            elif isinstance(value, int):
                target.uint32_param = value
            else:
                target.string_param = str(value)
        return response


def _trace_carrier(context: Any, infer_request: Any) -> None:
    """Attach the client's W3C trace context (``traceparent``, ``tracestate`` metadata)."""
    carrier = {
        key: value
        for key, value in context.invocation_metadata() or ()
        if key in ("traceparent", "tracestate") and isinstance(value, str)
    }
    if "traceparent" in carrier:
        infer_request.context[TRACE_CARRIER_KEY] = carrier


def _guarded(behavior: Handler) -> Handler:
    """Turn the kernel's errors (and bugs) into gRPC statuses."""

    async def guarded(request: Any, context: Any) -> Any:
        if request is codec.UNPARSABLE:
            await context.abort(grpc.StatusCode.INTERNAL, codec.UNPARSABLE_MESSAGE)
        try:
            return await behavior(request, context)
        except NereidError as exc:
            await context.abort(status_code(exc), exc.message)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception as exc:
            await _internal(context, exc)

    guarded.__name__ = getattr(behavior, "__name__", "guarded")
    return guarded


async def _internal(context: Any, exc: Exception) -> None:
    log.error("gRPC request failed: %r", exc, exc_info=exc)
    error = InternalError(str(exc) or type(exc).__name__)
    await context.abort(status_code(error), error.message)
