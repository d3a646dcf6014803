"""The repository manager: which model versions are loaded, in which state, and why.

It reads configurations from the stores, chooses versions by the version policy, loads versions
through their backends (ensembles after the models they use), reloads changed models while the
old version keeps serving, and polls in ``poll`` mode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, ModelConfig, complete_and_validate, config_from_json
from ..config.loading import load_config_file
from ..config.validation import ENSEMBLE_PLATFORM, missing_backend_error
from ..errors import (
    InvalidArgumentError,
    NereidError,
    NotFoundError,
    UnavailableError,
)
from .model import LoadedModel, ModelState
from .store import RepositoryStore
from .warmup import warm_up

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger(__name__)


@dataclass
class VersionSlot:
    state: ModelState = ModelState.UNKNOWN
    reason: str = ""
    loaded: LoadedModel | None = None


@dataclass
class ModelEntry:
    """A model the manager knows: its versions and what it was last loaded from."""

    name: str
    store: RepositoryStore | None = None
    versions: dict[int, VersionSlot] = field(default_factory=dict)
    signature: str = ""
    config_text: str = ""
    dependencies: tuple[str, ...] = ()
    temp_dir: Path | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def version_dirs(model_dir: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if model_dir.is_dir()
        else []
    )


def chosen_versions(config: ModelConfig, available: list[int]) -> list[int]:
    """The versions the version policy selects among those present."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(available)
    if which == "specific":
        return [v for v in available if v in set(policy.specific.versions)]
    count = policy.latest.num_versions or 1
    return available[-count:]


class RepositoryManager:
    def __init__(self, server: Server, stores: list[RepositoryStore]) -> None:
        self.server = server
        self.stores = stores
        self.models: dict[str, ModelEntry] = {}
        options = server.options
        self.mode = options.model_control_mode
        self._load_slots = asyncio.Semaphore(max(1, options.model_load_thread_count))
        self._poll_task: asyncio.Task | None = None

    # -- lookups -------------------------------------------------------------------------------

    def get(self, name: str, version: int = -1) -> LoadedModel:
        entry = self.models.get(name)
        if entry is None:
            raise NotFoundError(f"Request for unknown model: '{name}' is not found")
        if version == -1:
            ready = [
                v
                for v, slot in entry.versions.items()
                if slot.state is ModelState.READY and slot.loaded is not None
            ]
            if not ready:
                raise self.unavailable_error(name, -1)
            model = entry.versions[max(ready)].loaded
        else:
            slot = entry.versions.get(version)
            if slot is None or slot.loaded is None:
                if slot is None:
                    raise NotFoundError(
                        f"Request for unknown model: '{name}' version {version} is not found"
                    )
                raise self.unavailable_error(name, version)
            model = slot.loaded
        for dependency in entry.dependencies:
            if not self._has_ready(dependency):
                raise UnavailableError(
                    f"Request for model '{name}' is unavailable: its step model "
                    f"'{dependency}' is not ready"
                )
        return model

    def unavailable_error(self, name: str, version: int) -> UnavailableError:
        if version == -1:
            return UnavailableError(
                f"Request for unknown model: '{name}' has no available versions"
            )
        return UnavailableError(
            f"Request for unknown model: '{name}' version {version} is not at ready state"
        )

    def _has_ready(self, name: str) -> bool:
        entry = self.models.get(name)
        return entry is not None and any(
            s.state is ModelState.READY for s in entry.versions.values()
        )

    def ready_versions(self, name: str) -> list[int]:
        entry = self.models.get(name)
        if entry is None:
            return []
        return sorted(v for v, s in entry.versions.items() if s.state is ModelState.READY)

    def loaded(self) -> list[LoadedModel]:
        return [
            slot.loaded
            for name in sorted(self.models)
            for _, slot in sorted(self.models[name].versions.items())
            if slot.loaded is not None and slot.state is ModelState.READY
        ]

    def all_ready(self) -> bool:
        return all(
            slot.state is ModelState.READY
            for entry in self.models.values()
            for slot in entry.versions.values()
            if slot.state is not ModelState.UNAVAILABLE or slot.reason != "unloaded"
        )

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Triton's repository index: every model in the stores, with its versions' states."""
        rows: list[dict[str, Any]] = []
        names = set(self.models) | {n for s in self.stores for n in self._safe_list(s)}
        for name in sorted(names):
            entry = self.models.get(name)
            if entry is None or not entry.versions:
                if not ready_only:
                    rows.append({"name": name})
                continue
            for version, slot in sorted(entry.versions.items()):
                if ready_only and slot.state is not ModelState.READY:
                    continue
                row = {"name": name, "version": str(version), "state": slot.state.value}
                if slot.reason:
                    row["reason"] = slot.reason
                rows.append(row)
        return rows

    @staticmethod
    def _safe_list(store: RepositoryStore) -> list[str]:
        try:
            return store.list_models()
        except OSError:
            return []

    # -- start, stop, poll ------------------------------------------------------------------

    async def start(self) -> None:
        options = self.server.options
        if self.mode == "explicit":
            names = options.load_model
            if "*" in names:
                names = self._all_names()
        else:
            names = self._all_names()
        await self.load_many(names)
        if self.mode == "poll":
            self._poll_task = asyncio.get_running_loop().create_task(self._poll_loop())

    def _all_names(self) -> list[str]:
        return sorted({n for store in self.stores for n in store.list_models()})

    async def load_many(self, names: list[str]) -> None:
        """Load several models in parallel, each after the models it depends on."""
        results = await asyncio.gather(
            *(self._load_guarded(name) for name in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.error("failed to load model '%s': %s", name, result)

    async def _load_guarded(self, name: str) -> None:
        await self.load(name)

    async def _poll_loop(self) -> None:
        interval = self.server.options.repository_poll_secs
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll_once()
            except Exception:
                log.exception("repository poll failed")

    async def poll_once(self) -> None:
        """Load new models, reload changed ones, unload removed ones."""
        present = set(self._all_names())
        for name in sorted(set(self.models) - present):
            if self.models[name].store is not None:
                await self.unload(name)
                self.models.pop(name, None)
        changed = [
            name
            for name in sorted(present)
            if name not in self.models
            or self._store_of(name).signature(name) != self.models[name].signature
        ]
        await self.load_many(changed)

    async def stop(self, timeout: float | None = None) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
        await asyncio.gather(
            *(self.unload(name, timeout=timeout) for name in list(self.models)),
            return_exceptions=True,
        )
        for entry in self.models.values():
            if entry.temp_dir is not None:
                shutil.rmtree(entry.temp_dir, ignore_errors=True)

    # -- load ----------------------------------------------------------------------------------

    def _store_of(self, name: str) -> RepositoryStore:
        found = [s for s in self.stores if name in self._safe_list(s)]
        if not found:
            raise NotFoundError(f"failed to load '{name}', failed to poll from model repository")
        if len(found) > 1 and not self.server.options.model_namespacing:
            raise InvalidArgumentError(
                f"failed to load '{name}': model appears in multiple repositories: "
                + ", ".join(s.location for s in found)
            )
        return found[0]

    async def load_api(self, name: str, config: str | None, files: dict[str, bytes] | None) -> None:
        """Load through the InferenceService: explicit mode only, as in Triton."""
        if self.mode != "explicit":
            raise UnavailableError(
                "explicit model load / unload is not allowed if polling is enabled"
                if self.mode == "poll"
                else "explicit model load / unload is not allowed in 'none' model control mode"
            )
        if files and config is None:
            raise InvalidArgumentError(
                f"failed to load '{name}': 'config' must be provided with 'file:' contents"
            )
        await self.load(name, config, files, raise_errors=True)

    async def unload_api(self, name: str, unload_dependents: bool) -> None:
        if self.mode != "explicit":
            raise UnavailableError(
                "explicit model load / unload is not allowed if polling is enabled"
                if self.mode == "poll"
                else "explicit model load / unload is not allowed in 'none' model control mode"
            )
        if name not in self.models and name not in self._all_names():
            raise NotFoundError(f"failed to unload '{name}', no version is available")
        await self.unload(name)
        if unload_dependents:
            for other in list(self.models.values()):
                if name in other.dependencies:
                    await self.unload(other.name)

    async def load(
        self,
        name: str,
        config_override: str | None = None,
        files: dict[str, bytes] | None = None,
        *,
        raise_errors: bool = False,
    ) -> None:
        """Load (or reload) every version of ``name`` its policy selects."""
        entry = self.models.setdefault(name, ModelEntry(name))
        async with entry.lock:
            try:
                await self._load_locked(entry, config_override, files)
            except NereidError as exc:
                if raise_errors:
                    raise
                log.error("failed to load '%s': %s", name, exc.message)
                if self.server.options.exit_on_error and not self.server.ready:
                    self.server.startup_errors.append(exc)

    async def _load_locked(
        self, entry: ModelEntry, config_override: str | None, files: dict[str, bytes] | None
    ) -> None:
        name = entry.name
        if files is not None:
            model_dir = self._materialize(entry, files)
            store = None
        else:
            store = self._store_of(name)
            model_dir = await asyncio.to_thread(store.local_path, name)
        signature = store.signature(name) if store else ""
        config, source = self._read_config(model_dir, name, config_override)
        dependencies = (
            tuple(step.model_name for step in config.ensemble_scheduling.step)
            if config.platform == ENSEMBLE_PLATFORM
            else ()
        )
        for dependency in dependencies:
            if not self._has_ready(dependency) and dependency != name:
                await self.load(dependency)
        available = version_dirs(model_dir)
        if config.platform == ENSEMBLE_PLATFORM and not available:
            available = [1]
        wanted = (
            chosen_versions(config, available)
            if config.HasField("version_policy")
            else available[-1:]
        )
        if not wanted:
            reason = (
                f"at least one version must be available under the version policy of model '{name}'"
            )
            entry.versions = entry.versions or {0: VersionSlot(ModelState.UNAVAILABLE, reason)}
            raise UnavailableError(reason)
        entry.dependencies = dependencies
        old_slots = dict(entry.versions)
        if self._instances_only_change(entry, config, config_override, wanted):
            await self._update_instances(entry, config)
            entry.signature, entry.config_text = signature, config.SerializeToString().hex()
            return
        new: dict[int, VersionSlot] = {}
        failures: list[NereidError] = []
        for version in wanted:
            new[version] = await self._load_version(name, version, model_dir, config, source)
            if new[version].state is not ModelState.READY:
                failures.append(UnavailableError(new[version].reason))
        merged = dict(old_slots)
        for version, slot in new.items():
            old = old_slots.get(version)
            if slot.state is ModelState.READY or old is None or old.loaded is None:
                merged[version] = slot  # a failed reload keeps the old version serving
        dropped = [v for v, s in old_slots.items() if v not in wanted and s.loaded is not None]
        replaced = [
            old_slots[v]
            for v, s in new.items()
            if s.state is ModelState.READY and v in old_slots and old_slots[v].loaded is not None
        ]
        for version in dropped:
            merged[version] = VersionSlot(ModelState.UNAVAILABLE, "unloaded")
        merged = {v: s for v, s in merged.items() if v != 0 or s.loaded is not None}
        entry.versions = merged
        entry.signature = signature
        entry.config_text = config.SerializeToString().hex()
        entry.store = store
        for slot in replaced:
            await self._unload_slot(name, slot)
        for version in dropped:
            await self._unload_slot(name, old_slots[version])
        if failures and not any(s.state is ModelState.READY for s in new.values()):
            raise failures[0]

    def _instances_only_change(
        self, entry: ModelEntry, config: ModelConfig, override: str | None, wanted: list[int]
    ) -> bool:
        loaded = [s.loaded for s in entry.versions.values() if s.loaded is not None]
        if not loaded or sorted(v for v, s in entry.versions.items() if s.loaded) != wanted:
            return False
        current = ModelConfig()
        current.CopyFrom(loaded[0].config)
        candidate = ModelConfig()
        candidate.CopyFrom(config)
        complete_and_validate(candidate, entry.name, "config")
        if list(candidate.instance_group) == list(current.instance_group):
            return False
        del current.instance_group[:]
        del candidate.instance_group[:]
        # What auto-complete added is in current only: compare what the user wrote.
        return self._user_fields_equal(current, candidate)

    @staticmethod
    def _user_fields_equal(current: ModelConfig, candidate: ModelConfig) -> bool:
        return all(getattr(current, fd.name) == value for fd, value in candidate.ListFields())

    async def _update_instances(self, entry: ModelEntry, config: ModelConfig) -> None:
        complete_and_validate(config, entry.name, "config")
        for slot in entry.versions.values():
            if slot.loaded is not None:
                await slot.loaded.set_instance_groups(config.instance_group)

    def _materialize(self, entry: ModelEntry, files: dict[str, bytes]) -> Path:
        """Write ``file:<version>/<name>`` contents into a private model folder."""
        if entry.temp_dir is not None:
            shutil.rmtree(entry.temp_dir, ignore_errors=True)
        root = Path(tempfile.mkdtemp(prefix="nereid-model-"))
        model_dir = (root / entry.name).resolve()
        model_dir.mkdir()
        for relative, content in files.items():
            target = (model_dir / relative).resolve()
            if not target.is_relative_to(model_dir) or target == model_dir:
                shutil.rmtree(root, ignore_errors=True)
                raise InvalidArgumentError(
                    f"failed to load '{entry.name}': file path 'file:{relative}' escapes the "
                    "model directory"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        entry.temp_dir = root
        return model_dir

    def _read_config(
        self, model_dir: Path, name: str, override: str | None
    ) -> tuple[ModelConfig, str]:
        if override is not None:
            try:
                data = json.loads(override) if override.strip() else {}
            except json.JSONDecodeError as exc:
                raise ConfigError(f"failed to load '{name}': invalid config JSON: {exc}") from None
            return config_from_json(data, f"'{name}' config override"), "config override"
        config_name = self.server.options.model_config_name
        candidates = []
        if config_name:
            candidates.append(model_dir / "configs" / f"{config_name}.pbtxt")
        candidates.append(model_dir / "config.pbtxt")
        for path in candidates:
            if path.is_file():
                return load_config_file(path), str(path)
        if not model_dir.is_dir():
            raise NotFoundError(f"failed to load '{name}': model directory not found")
        return ModelConfig(), str(model_dir)

    async def _load_version(
        self, name: str, version: int, model_dir: Path, base: ModelConfig, source: str
    ) -> VersionSlot:
        config = ModelConfig()
        config.CopyFrom(base)
        hooks = self.server.plugins.hook
        retries = max(0, self.server.options.model_load_retry_count)
        async with self._load_slots:
            for attempt in range(retries + 1):
                try:
                    hooks.model_loading(model_name=name, version=version, config=config)
                    loaded = await self._build(name, version, model_dir, config, source)
                except NereidError as exc:
                    error = exc
                except Exception as exc:  # a backend's own exception
                    log.exception("loading '%s' version %d failed", name, version)
                    error = NereidError.of(exc)
                else:
                    hooks.model_ready(model_name=name, version=version, config=loaded.config)
                    log.info("successfully loaded '%s' version %d", name, version)
                    return VersionSlot(ModelState.READY, "", loaded)
                if attempt < retries:
                    log.warning(
                        "retrying load of '%s' version %d: %s", name, version, error.message
                    )
        hooks.model_load_failed(model_name=name, version=version, error=error)
        return VersionSlot(ModelState.UNAVAILABLE, error.message)

    async def _build(
        self, name: str, version: int, model_dir: Path, config: ModelConfig, source: str
    ) -> LoadedModel:
        server = self.server
        version_path = model_dir / str(version)
        model = None
        if config.platform != ENSEMBLE_PLATFORM:
            backend_name = (
                config.backend or config.platform or self._claiming_backend(model_dir, source)
            )
            entry = server.plugins.registries["backend"].find(backend_name)
            if entry is None:
                raise missing_backend_error(backend_name, source)
            if not config.backend:
                config.backend = entry.name
            backend = server.backend(entry)
            model = await asyncio.to_thread(backend.create_model, config, version_path)
            if not server.options.disable_auto_complete_config:
                await asyncio.to_thread(model.complete_config, config)
        try:
            complete_and_validate(config, name, source)
            loaded = LoadedModel(server, name, version, config, version_path, model)
            await loaded.start(server.plugins.registries["scheduler"])
            await warm_up(loaded)
        except BaseException:
            if model is not None:
                await asyncio.to_thread(model.finalize)
            raise
        return loaded

    def _claiming_backend(self, model_dir: Path, source: str) -> str:
        """For a model folder without a configured backend: the one installed backend that
        claims one of its model files."""
        files = {p.name for v in version_dirs(model_dir) for p in (model_dir / str(v)).iterdir()}
        claimants = [
            e.name
            for e in self.server.plugins.registries["backend"]
            if files & set(e.model_filenames)
        ]
        if len(claimants) == 1:
            return claimants[0]
        if not claimants:
            raise ConfigError(
                f"{source}: unable to determine the backend: specify 'backend' or 'platform' "
                f"(no installed backend claims files {sorted(files)})"
            )
        raise ConfigError(
            f"{source}: unable to determine the backend: files {sorted(files)} are claimed by "
            f"several backends {sorted(claimants)}; specify 'backend'"
        )

    # -- unload --------------------------------------------------------------------------------

    async def unload(self, name: str, timeout: float | None = None) -> None:
        entry = self.models.get(name)
        if entry is None:
            return
        async with entry.lock:
            slots = list(entry.versions.items())
            for version, slot in slots:
                if slot.loaded is not None:
                    slot.state = ModelState.UNLOADING
                    await self._unload_slot(name, slot, timeout)
                entry.versions[version] = VersionSlot(ModelState.UNAVAILABLE, "unloaded")

    async def _unload_slot(
        self, name: str, slot: VersionSlot, timeout: float | None = None
    ) -> None:
        loaded = slot.loaded
        if loaded is None:
            return
        slot.loaded = None
        await loaded.unload(timeout)
        self.server.plugins.hook.model_unloaded(model_name=name, version=loaded.version)
        log.info("successfully unloaded '%s' version %d", name, loaded.version)
