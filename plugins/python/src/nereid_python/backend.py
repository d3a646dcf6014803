"""The ``python`` backend: the kernel's Backend -> Model -> ModelInstance contract over
Triton Python-backend ``model.py`` files.

A :class:`PythonModel` owns the model file (imported once per model version) and the services
its code reaches through ``pb_utils`` (the server's custom-metrics registry, logging). Each
instance is an :class:`~nereid_python.host.InstanceHost`; this release hosts every instance in
the server process (:class:`~nereid_python.host.ThreadHost`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nereid.backend import Backend, BackendContext, InstanceSpec, Model, ModelInstance
from nereid.config import ModelConfig, config_from_json, config_to_json
from nereid.errors import InternalError, InvalidArgumentError, NereidError

from . import pb_utils, runtime
from .host import InstanceHost, ThreadHost
from .loader import ModelFile, model_file_path
from .settings import BackendSettings

log = logging.getLogger("nereid.python")


class PythonBackend(Backend):
    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.settings = BackendSettings.parse(context.settings)

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        return PythonModel(self, config, Path(path))


class PythonModel(Model):
    def __init__(self, backend: PythonBackend, config: ModelConfig, path: Path) -> None:
        self.backend = backend
        self.config = config  # completed and validated in place by the kernel before instances
        self.path = path
        self.name = config.name or path.parent.name
        self.file = ModelFile(model_file_path(config, path), f"{self.name}_{path.name}")
        registry = getattr(backend.context.api, "custom_metrics", None)
        self.services: runtime.Services = (
            runtime.RegistryServices(registry, self.name)
            if registry is not None
            else runtime.Services()
        )
        self.hosts: list[InstanceHost] = []
        if "EXECUTION_ENV_PATH" in config.parameters:
            log.warning(
                "model '%s': EXECUTION_ENV_PATH is not supported yet; the model runs in the "
                "server's Python environment",
                self.name,
            )

    # -- auto-complete ---------------------------------------------------------------------------

    def complete_config(self, config: ModelConfig) -> None:
        """Run the model's static ``auto_complete_config`` (when it has one) on the
        configuration as Triton's JSON, and take what it returns."""
        auto_complete = getattr(self._model_class(), "auto_complete_config", None)
        if auto_complete is None:
            return
        data = config_to_json(config)
        if not data.get("name"):
            data["name"] = self.name
        wrapped = pb_utils.ModelConfig(data)
        try:
            with runtime.active(self.services):
                result = auto_complete(wrapped)
        except Exception as exc:
            raise InvalidArgumentError(
                f"auto_complete_config of model '{self.name}' failed: {type(exc).__name__}: {exc}"
            ) from None
        if result is None:
            result = wrapped
        if not isinstance(result, pb_utils.ModelConfig):
            raise InvalidArgumentError(
                f"auto_complete_config of model '{self.name}' must return a pb_utils.ModelConfig, "
                f"not {type(result).__name__}"
            )
        completed = dict(result.as_dict())
        completed["name"] = config.name  # the kernel fills in and checks the name
        config.CopyFrom(config_from_json(completed, f"model '{self.name}' auto-complete"))

    # -- instances -------------------------------------------------------------------------------

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        host = ThreadHost(
            self._model_class(),
            self._args(spec),
            decoupled=self.config.model_transaction_policy.decoupled,
            services=self.services,
        )
        try:
            host.start()
        except NereidError:
            host.runner.abandon()
            raise
        except Exception as exc:
            host.runner.abandon()
            log.error("initialize of model instance '%s' failed", spec.name, exc_info=exc)
            raise InternalError(f"{type(exc).__name__}: {exc}") from None
        self.hosts.append(host)
        return host

    def _args(self, spec: InstanceSpec) -> dict[str, str]:
        """``initialize``'s argument: every key and value a string, as in Triton."""
        import json

        return {
            "model_config": json.dumps(config_to_json(self.config)),
            "model_instance_kind": spec.kind.removeprefix("KIND_"),
            "model_instance_name": spec.name,
            "model_instance_device_id": str(spec.device_id),
            "model_repository": str(self.path.parent),
            "model_version": self.path.name,
            "model_name": self.config.name or self.name,
        }

    def _model_class(self) -> type:
        try:
            return self.file.model_class()
        except NereidError:
            raise
        except Exception as exc:
            log.error("importing '%s' failed", self.file.path, exc_info=exc)
            raise InvalidArgumentError(
                f"failed to import '{self.file.path}': {type(exc).__name__}: {exc}"
            ) from None

    # -- state -----------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Ready while every live instance says so (the model's ``is_model_ready()``)."""
        return all(host.is_ready() for host in self.hosts if not getattr(host, "finalized", False))

    def finalize(self) -> None:
        self.hosts = []
        self.file.unload()
        close: Any = getattr(self.services, "close", None)
        if close is not None:
            close()
        runtime.forget(self.services)
