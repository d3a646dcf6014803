"""The ``python`` backend: the kernel's Backend -> Model -> ModelInstance contract over
Triton Python-backend ``model.py`` files.

A :class:`PythonModel` owns the model file and the services its code reaches through
``pb_utils`` (the server's custom-metrics registry, logging). Each instance is an
:class:`~nereid_python.host.InstanceHost`: by default a
:class:`~nereid_python.process.ProcessHost` (the instance runs in a process of its own, as in
Triton), or, with the ``execution_mode`` parameter ``thread``, a
:class:`~nereid_python.host.ThreadHost` (in the server process, on the instance thread).

In process mode the server never imports the model file: the first model process imports it
(and runs ``auto_complete_config`` there), and is then kept to become the first instance. The
processes of the other instances are started at the same time, so they start in parallel.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from nereid.backend import Backend, BackendContext, InstanceSpec, Model, ModelInstance
from nereid.config import ModelConfig, config_from_json, config_to_json
from nereid.config.model_config_pb2 import ModelInstanceGroup
from nereid.errors import InternalError, InvalidArgumentError, NereidError

from . import environments, runtime
from .host import InstanceHost, ThreadHost
from .loader import MissingClassError, ModelFile, model_file_path
from .process import ProcessHost, WorkerProcess
from .runner import AutoCompleteError, auto_complete
from .settings import BackendSettings

log = logging.getLogger("nereid.python")


class PythonBackend(Backend):
    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.settings = BackendSettings.parse(context.settings)
        _sweep_stale(self.settings.process.shm_dir, self.settings.process.shm_prefix)

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        return PythonModel(self, config, Path(path))


class PythonModel(Model):
    def __init__(self, backend: PythonBackend, config: ModelConfig, path: Path) -> None:
        self.backend = backend
        self.config = config  # completed and validated in place by the kernel before instances
        self.path = path
        self.name = config.name or path.parent.name
        self.mode, self.process_settings = backend.settings.for_model(self.name, config.parameters)
        self.file = ModelFile(model_file_path(config, path), f"{self.name}_{path.name}")
        self._spares: list[WorkerProcess] = []
        self._spares_lock = threading.Lock()
        registry = getattr(backend.context.api, "custom_metrics", None)
        self.services: runtime.Services = (
            runtime.RegistryServices(registry, self.name, backend.context.api)
            if registry is not None
            else runtime.Services()
        )
        self.hosts: list[InstanceHost] = []
        if environments.wanted(config.parameters, self.file.path):
            if self.mode == "thread":
                raise InvalidArgumentError(
                    f"model '{self.name}': a Python environment of its own "
                    f"({environments.ENV_PARAMETER} or {environments.REQUIREMENTS}) needs "
                    "execution_mode 'process': in 'thread' mode the model runs in the server's "
                    "process and environment"
                )
            environment = environments.prepare(
                self.name,
                config.parameters,
                path.parent,
                self.file.path,
                self.process_settings.env_cache_dir or environments.default_cache_dir(),
            )
            self.process_settings = replace(
                self.process_settings, environment=environment.settings()
            )

    # -- auto-complete ---------------------------------------------------------------------------

    def complete_config(self, config: ModelConfig) -> None:
        """Run the model's static ``auto_complete_config`` (when it has one) on the
        configuration as Triton's JSON, and take what it returns. In process mode it runs in
        the first model process."""
        data = config_to_json(config)
        try:
            if self.mode == "thread":
                completed = auto_complete(self._model_class(), data, self.name, self.services)
            else:
                with self._spares_lock:
                    if not self._spares:
                        self._spares = self._spawn(max(1, self._expected()))
                    worker = self._spares[0]
                if not worker.loaded()["auto_complete"]:
                    return
                completed = worker.auto_complete(data, self.name)
        except AutoCompleteError as exc:
            raise InvalidArgumentError(str(exc)) from None
        if completed is None:
            return
        completed["name"] = config.name  # the kernel fills in and checks the name
        config.CopyFrom(config_from_json(completed, f"model '{self.name}' auto-complete"))

    # -- instances -------------------------------------------------------------------------------

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        args = self._args(spec)
        decoupled = self.config.model_transaction_policy.decoupled
        if self.mode == "thread":
            host: InstanceHost = ThreadHost(
                self._model_class(), args, decoupled=decoupled, services=self.services
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
        else:
            host = ProcessHost(self, args, decoupled=decoupled, services=self.services)
            host.start()
        self.hosts.append(host)
        return host

    # -- model processes -------------------------------------------------------------------------

    def _expected(self) -> int:
        """How many instances the configuration asks for."""
        count = 0
        for group in self.config.instance_group:
            devices = len(group.gpus) if group.kind == ModelInstanceGroup.KIND_GPU else 0
            count += group.count * max(1, devices)
        return count

    def _spawn(self, count: int) -> list[WorkerProcess]:
        workers: list[WorkerProcess] = []
        try:
            for _ in range(count):
                workers.append(
                    WorkerProcess(self.name, self.file.path, self.file.label, self.process_settings)
                )
        except BaseException:
            for worker in workers:
                worker.stop()
            raise
        return workers

    def take_worker(self) -> WorkerProcess:
        """A started model process for a new instance: one started ahead if there is one
        (starting the processes of the instances still to come beside it)."""
        with self._spares_lock:
            missing = max(1, self._expected() - len(self.hosts)) - len(self._spares)
            if missing > 0:
                self._spares.extend(self._spawn(missing))
            return self._spares.pop(0)

    def new_worker(self) -> WorkerProcess:
        """A fresh model process (to restart an instance)."""
        return self._spawn(1)[0]

    def _args(self, spec: InstanceSpec) -> dict[str, str]:
        """``initialize``'s argument: every key and value a string, as in Triton."""
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
        except MissingClassError as exc:
            raise InvalidArgumentError(str(exc)) from None
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
        with self._spares_lock:
            spares, self._spares = self._spares, []
        for worker in spares:
            worker.stop()
        self.file.unload()
        close: Any = getattr(self.services, "close", None)
        if close is not None:
            close()
        runtime.forget(self.services)


def _sweep_stale(directory: str, prefix: str) -> None:
    """Remove shared-memory files left by servers that are gone (killed before cleaning up):
    ``<prefix>_<server pid>_...`` where that process no longer exists."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    start = prefix + "_"
    for name in names:
        if not name.startswith(start):
            continue
        pid_text = name[len(start) :].split("_", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
        except OSError:
            pass
