"""The repository manager: which model versions are loaded, in which state, and why.

Every change of what is loaded is an *action* (start-up, a poll, an API load or unload, stop);
actions run one at a time. A load action reads the configurations first (fetching the model
folders from their stores), adds the models the ensembles among them use, orders them so that an
ensemble loads after its steps, and then loads them in parallel (``--model-load-thread-count``
versions at a time). What it loads replaces what was serving only once it is ready; a version
that fails to reload leaves the old one serving. Versions that go away are unloaded in the
background once their in-flight requests have finished.

What decides a reload: the configuration as written (minus ``instance_group``), the files of the
model folder outside the version folders, and each version folder's files. A change of
``instance_group`` alone updates the instances of the loaded versions in place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, ModelConfig, complete_and_validate, config_from_json
from ..config.loading import load_config_file
from ..config.validation import ENSEMBLE_PLATFORM, missing_backend_error
from ..errors import (
    InternalError,
    InvalidArgumentError,
    NereidError,
    NotFoundError,
    UnavailableError,
)
from .model import LoadedModel, ModelState
from .store import RepositoryStore, digest, walk_entries

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger(__name__)

ModelKey = tuple[str, str]
"""(namespace, name): the namespace is the repository location with ``--model-namespacing``,
else ``""``."""

UNLOADED = "unloaded"
CONTROL_DISABLED = "explicit model load / unload is not allowed if polling is enabled"


@dataclass(eq=False)
class VersionSlot:
    """One version of a model as the index shows it, and the loaded version when READY."""

    state: ModelState = ModelState.UNKNOWN
    reason: str = ""
    loaded: LoadedModel | None = None
    fingerprint: str = ""  # of the version folder it was loaded from
    source_dir: Path | None = None  # the private folder of a model loaded from API payloads


class VersionTable(dict[int, VersionSlot]):
    """A model's versions by number. Every change moves :attr:`generation` on, and with it
    the routes :meth:`RepositoryManager.get` caches (a route is the version a request for a
    name goes to). The manager changes a table by item only (``table[version] = slot``,
    ``del table[version]``), and moves the generation on itself for the other changes that
    can move a route: a model added or removed, and the dependencies of a reloaded one (an
    ensemble is unavailable while a step model is)."""

    generation = 0

    def __setitem__(self, version: int, slot: VersionSlot) -> None:
        super().__setitem__(version, slot)
        VersionTable.generation += 1

    def __delitem__(self, version: int) -> None:
        super().__delitem__(version)
        VersionTable.generation += 1


@dataclass(eq=False)
class ModelEntry:
    """A model the manager knows: its versions, and what they were loaded from."""

    name: str
    namespace: str = ""
    store: RepositoryStore | None = None
    versions: VersionTable = field(default_factory=VersionTable)
    # The model as a whole, for a failure before any version was reached (a bad config).
    state: ModelState = ModelState.UNKNOWN
    reason: str = ""
    signature: str | None = None
    config_key: bytes | None = None
    instance_groups: bytes = b""
    shared_fingerprint: str = ""
    dependencies: tuple[ModelKey, ...] = ()  # the step models of an ensemble
    temp_dirs: set[Path] = field(default_factory=set)
    retiring: set[VersionSlot] = field(default_factory=set)

    @property
    def key(self) -> ModelKey:
        return (self.namespace, self.name)

    def ready_versions(self) -> list[int]:
        return sorted(v for v, s in self.versions.items() if s.state is ModelState.READY)

    def has_ready_version(self) -> bool:
        return any(s.state is ModelState.READY for s in self.versions.values())


@dataclass(eq=False)
class _Plan:
    """What a load action found for one model before loading anything."""

    entry: ModelEntry
    override: str | None = None
    files: dict[str, bytes] | None = None
    signature: str | None = None
    store: RepositoryStore | None = None
    model_dir: Path | None = None
    temp_dir: Path | None = None
    config: ModelConfig | None = None
    source: str = ""
    config_key: bytes = b""
    instance_groups: bytes = b""
    shared_fingerprint: str = ""
    version_fingerprints: dict[int, str] = field(default_factory=dict)
    wanted: list[int] = field(default_factory=list)
    dependencies: list[ModelKey] = field(default_factory=list)
    error: NereidError | None = None


def version_dirs(model_dir: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if model_dir.is_dir()
        else []
    )


def chosen_versions(config: ModelConfig, available: list[int]) -> list[int]:
    """The versions the version policy selects among those present (latest 1 by default)."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(available)
    if which == "specific":
        return [v for v in available if v in set(policy.specific.versions)]
    count = policy.latest.num_versions if which == "latest" else 1
    return available[-count:] if count > 0 else []


def folder_fingerprints(model_dir: Path, config_file: str | None) -> tuple[str, dict[int, str]]:
    """A fingerprint of the files outside the version folders (the config file in use left
    out: its content is compared instead), and one per version folder."""
    shared: list[tuple[str, str]] = []
    versions: dict[int, list[tuple[str, str]]] = {}
    for path, stamp in walk_entries(model_dir):
        head, _, rest = path.partition("/")
        if head.isdigit() and (rest or stamp == ""):
            versions.setdefault(int(head), []).append((rest, stamp))
        elif path != config_file:
            shared.append((path, stamp))
    return digest(shared), {v: digest(entries) for v, entries in versions.items()}


def _serialized(message: Any) -> bytes:
    return message.SerializeToString(deterministic=True)


class RepositoryManager:
    def __init__(self, server: Server, stores: list[RepositoryStore]) -> None:
        self.server = server
        self.stores = stores
        self.models: dict[ModelKey, ModelEntry] = {}
        self._by_name: dict[str, list[ModelEntry]] = {}
        # (name, version asked for) -> (VersionTable.generation, the version it went to)
        self._routes: dict[tuple[str, int], tuple[int, LoadedModel]] = {}
        options = server.options
        self.mode = options.model_control_mode
        self.namespacing = bool(options.model_namespacing)
        self._load_slots = asyncio.Semaphore(max(1, options.model_load_thread_count))
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()
        self._retiring: set[LoadedModel] = set()
        self._poll_task: asyncio.Task | None = None
        self._stop_event = asyncio.Event()
        self._stopping = False

    # -- lookups (request path: no I/O, no awaits) -------------------------------------------

    def _named(self, name: str) -> list[ModelEntry]:
        return self._by_name.get(name, [])

    def _add(self, entry: ModelEntry) -> None:
        self.models[entry.key] = entry
        self._by_name.setdefault(entry.name, []).append(entry)
        VersionTable.generation += 1

    def _remove(self, entry: ModelEntry) -> None:
        VersionTable.generation += 1
        del self.models[entry.key]
        named = self._by_name[entry.name]
        named.remove(entry)
        if not named:
            del self._by_name[entry.name]

    def _lookup(self, name: str) -> ModelEntry:
        entries = self._named(name)
        if not entries:
            raise NotFoundError(f"Request for unknown model: '{name}' is not found")
        if len(entries) > 1:
            raise InvalidArgumentError(
                f"There are {len(entries)} models named '{name}' in different repositories "
                f"({', '.join(sorted(e.namespace for e in entries))}); the name is ambiguous"
            )
        return entries[0]

    def get(self, name: str, version: int = -1) -> LoadedModel:
        """The READY model version a request for ``name`` goes to: the version asked for, or
        the highest READY one for ``-1``. An ensemble is unavailable while a step model is.
        Found once per change of the versions (see :class:`VersionTable`)."""
        generation = VersionTable.generation  # read first: a change meanwhile voids the route
        route = self._routes.get((name, version))
        if route is not None and route[0] == generation:
            return route[1]
        loaded = self._route(name, version)
        self._routes[(name, version)] = (generation, loaded)
        return loaded

    def _route(self, name: str, version: int) -> LoadedModel:
        entry = self._lookup(name)
        if version == -1:
            slot, highest = None, -1
            for number, candidate in entry.versions.items():
                if candidate.state is ModelState.READY and number > highest:
                    slot, highest = candidate, number
            if slot is None:
                raise self.unavailable_error(name, -1)
        else:
            slot = entry.versions.get(version)
            if slot is None:
                raise NotFoundError(
                    f"Request for unknown model: '{name}' version {version} is not found"
                )
            if slot.state is not ModelState.READY:
                raise self.unavailable_error(name, version)
        for dependency in entry.dependencies:
            other = self.models.get(dependency)
            if other is None or not other.has_ready_version():
                raise UnavailableError(
                    f"Request for model '{name}' is unavailable: its step model "
                    f"'{dependency[1]}' is not ready"
                )
        return slot.loaded

    def unavailable_error(self, name: str, version: int) -> UnavailableError:
        if version == -1:
            return UnavailableError(
                f"Request for unknown model: '{name}' has no available versions"
            )
        return UnavailableError(
            f"Request for unknown model: '{name}' version {version} is not at ready state"
        )

    def _resolve(self, namespace: str, name: str, known: Iterable[ModelKey] = ()) -> ModelKey:
        """The model a step of an ensemble in ``namespace`` names: the one in the same
        namespace, else the only one of that name."""
        keys = set(self.models) | set(known)
        if (namespace, name) in keys:
            return (namespace, name)
        others = [key for key in keys if key[1] == name]
        return others[0] if len(others) == 1 else (namespace, name)

    def ready_versions(self, name: str) -> list[int]:
        return sorted(v for entry in self._named(name) for v in entry.ready_versions())

    def loaded(self) -> list[LoadedModel]:
        """Every READY model version, by name then version."""
        return [
            slot.loaded
            for key in sorted(self.models, key=lambda k: (k[1], k[0]))
            for _, slot in sorted(self.models[key].versions.items())
            if slot.state is ModelState.READY
        ]

    def all_ready(self) -> bool:
        """Strict readiness, as Triton has it: every model the manager has tried to load has
        all its versions READY, except versions that were unloaded on purpose."""
        for entry in self.models.values():
            if not entry.versions:
                if entry.state is not ModelState.UNKNOWN:
                    return False
                continue
            for slot in entry.versions.values():
                if slot.state is not ModelState.READY and slot.reason != UNLOADED:
                    return False
        return True

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Triton's repository index: every model in the repositories or loaded, each version
        with its state (and the reason when not READY); a model never loaded by name only."""
        rows: list[dict[str, Any]] = []
        keys = set(self.models) | set(self._scan_sync())
        for key in sorted(keys, key=lambda k: (k[1], k[0])):
            entry = self.models.get(key)
            name = key[1]
            if entry is None or (not entry.versions and entry.state is ModelState.UNKNOWN):
                if not ready_only:
                    rows.append({"name": name})
                continue
            if not entry.versions:
                if not ready_only:
                    row = {"name": name, "state": entry.state.value}
                    if entry.reason:
                        row["reason"] = entry.reason
                    rows.append(row)
                continue
            for version, slot in sorted(entry.versions.items()):
                if ready_only and slot.state is not ModelState.READY:
                    continue
                row = {"name": name, "version": str(version), "state": slot.state.value}
                if slot.reason:
                    row["reason"] = slot.reason
                rows.append(row)
        return rows

    # -- repositories ------------------------------------------------------------------------

    def _scan_sync(self) -> dict[ModelKey, list[RepositoryStore]]:
        """Every model folder of every repository, by key (several stores: a name clash)."""
        found: dict[ModelKey, list[RepositoryStore]] = {}
        for store in self.stores:
            try:
                names = store.list_models()
            except OSError as exc:
                log.error("failed to list repository %s: %s", store.location, exc)
                continue
            namespace = store.location if self.namespacing else ""
            for name in names:
                stores = found.setdefault((namespace, name), [])
                if store not in stores:
                    stores.append(store)
        return found

    async def _scan(self) -> dict[ModelKey, list[RepositoryStore]]:
        return await asyncio.to_thread(self._scan_sync)

    # -- start, poll, stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the start-up models: all of them, or in ``explicit`` mode those named by
        ``--load-model`` (``*`` for all). Failures go to ``server.startup_errors``."""
        options = self.server.options
        async with self._lock:
            scan = await self._scan()
            errors: list[NereidError] = []
            if self.mode == "explicit":
                names = list(dict.fromkeys(options.load_model))
                keys = sorted(scan) if "*" in names else []
                for name in names:
                    if name == "*":
                        continue
                    named = [key for key in scan if key[1] == name]
                    if not named:
                        errors.append(self._not_in_repository(name))
                    keys.extend(named)
            else:
                if options.load_model:
                    log.warning("--load-model is ignored in '%s' model control mode", self.mode)
                keys = sorted(scan)
            results = await self._load_keys(keys, scan)
        errors.extend(error for error in results.values() if error is not None)
        for error in errors:
            log.error("%s", error.message)
        self.server.startup_errors.extend(errors)
        self._log_table()
        if self.mode == "poll" and options.repository_poll_secs > 0:
            self._poll_task = asyncio.get_running_loop().create_task(
                self._poll_loop(options.repository_poll_secs), name="nereid-repository-poll"
            )

    def _log_table(self) -> None:
        rows = [r for r in self.index() if "state" in r]
        if not rows:
            log.info("no models loaded")
            return
        for row in rows:
            log.info(
                "model '%s' version %s: %s%s",
                row["name"],
                row.get("version", "-"),
                row["state"],
                f" ({row['reason']})" if row.get("reason") else "",
            )

    async def _poll_loop(self, interval: float) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop_event.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await self.poll_once()
            except Exception:
                log.exception("repository poll failed")

    async def poll_once(self) -> None:
        """Load added models, reload changed ones (versions added or removed, config or files
        changed) and unload removed ones."""
        async with self._lock:
            if self._stopping:
                return
            scan = await self._scan()
            for key, entry in list(self.models.items()):
                if key not in scan:
                    log.info("model '%s' was removed from the repository: unloading", key[1])
                    for version in list(entry.versions):
                        self._spawn(self._drain(entry, version, None))
                    self._remove(entry)
            signatures = dict(
                zip(
                    scan,
                    await asyncio.gather(
                        *(self._signature(key[1], stores) for key, stores in scan.items())
                    ),
                    strict=True,
                )
            )
            changed = [
                key
                for key in sorted(scan)
                if key not in self.models or signatures[key] != self.models[key].signature
            ]
            if changed:
                results = await self._load_keys(changed, scan, signatures)
                for error in results.values():
                    if error is not None:
                        log.error("%s", error.message)

    @staticmethod
    async def _signature(name: str, stores: list[RepositoryStore]) -> str | None:
        if len(stores) != 1:
            return None
        try:
            return await asyncio.to_thread(stores[0].signature, name)
        except OSError:
            return None

    async def stop(self, timeout: float | None = None) -> None:
        """Stop polling, then unload every model, ensembles before the models they use: each
        version stops accepting and gets until ``timeout`` (seconds, from now, shared by all;
        ``None``: no limit) to finish the requests in flight."""
        self._stopping = True
        self._stop_event.set()
        if self._poll_task is not None:
            await asyncio.gather(self._poll_task, return_exceptions=True)
            self._poll_task = None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        if timeout is not None:
            for loaded in list(self._retiring):  # shorten the drains under way
                self._spawn(loaded.unload(remaining()))
        drained = True
        async with self._lock:
            for wave in self._unload_waves(list(self.models.values())):
                results = await asyncio.gather(
                    *(
                        self._drain(entry, version, remaining())
                        for entry in wave
                        for version in list(entry.versions)
                    )
                )
                drained = drained and all(results)
        while self._background:
            results = await asyncio.gather(*list(self._background), return_exceptions=True)
            drained = drained and all(r is True for r in results)
        for entry in self.models.values():
            self._clean_temp_dirs(entry)
        if drained:
            log.info("drained in-flight requests and unloaded every model")
        else:
            log.warning(
                "unloaded every model; some requests were still in flight after %ss", timeout
            )

    def _unload_waves(self, entries: list[ModelEntry]) -> list[list[ModelEntry]]:
        """``entries`` in groups: each group holds the models no later group's model uses."""
        left = list(entries)
        waves = []
        while left:
            keys = {e.key for e in left}
            used = {d for e in left for d in e.dependencies} & keys
            wave = [e for e in left if e.key not in used] or left
            waves.append(wave)
            left = [e for e in left if e not in wave]
        return waves

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the load and unload API --------------------------------------------------------------

    def _check_control(self) -> None:
        if self.mode != "explicit":
            raise UnavailableError(CONTROL_DISABLED)
        if self._stopping:
            raise UnavailableError("the server is stopping")

    @staticmethod
    def _not_in_repository(name: str) -> NereidError:
        return InternalError(f"failed to load '{name}', failed to poll from model repository")

    async def load_api(
        self, name: str, config: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        """Load or reload ``name`` (``explicit`` mode only, as in Triton), with an optional
        ``config`` (JSON) replacing its configuration and optional ``files`` (relative path,
        with or without the ``file:`` prefix, to contents) replacing its folder."""
        self._check_control()
        if files:
            files = {path.removeprefix("file:"): data for path, data in files.items()}
            if config is None:
                raise InvalidArgumentError(
                    f"failed to load '{name}': a 'config' must be given with 'file:' contents"
                )
        async with self._lock:
            scan = await self._scan()
            if files:
                keys = [e.key for e in self._named(name)] or [("", name)]
            else:
                keys = [key for key in scan if key[1] == name]
                if not keys:
                    raise self._not_in_repository(name)
            results = await self._load_keys(
                keys, scan, overrides={key: (config, files or None) for key in keys}
            )
        errors = [results[key] for key in keys if results.get(key) is not None]
        if errors:
            raise errors[0]

    async def unload_api(self, name: str, unload_dependents: bool = False) -> None:
        """Unload ``name`` (``explicit`` mode only), after its in-flight requests finish; with
        ``unload_dependents`` the ensembles that use it first. Unloading a model that is not
        loaded succeeds, as in Triton."""
        self._check_control()
        await self.unload(name, dependents=unload_dependents)

    async def unload(
        self, name: str, timeout: float | None = None, *, dependents: bool = False
    ) -> None:
        """Unload every version of ``name`` once its in-flight requests finish (or after
        ``timeout`` seconds); with ``dependents``, the models that use it first."""
        async with self._lock:
            targets = self._named(name)
            if dependents:
                targets = self._with_dependents(targets)
            for wave in self._unload_waves(targets):
                await asyncio.gather(
                    *(
                        self._drain(entry, version, timeout)
                        for entry in wave
                        for version in list(entry.versions)
                    )
                )

    def _with_dependents(self, entries: list[ModelEntry]) -> list[ModelEntry]:
        found = {e.key: e for e in entries}
        grew = True
        while grew:
            grew = False
            for other in self.models.values():
                if other.key in found:
                    continue
                if set(other.dependencies) & set(found):
                    found[other.key] = other
                    grew = True
        return list(found.values())

    def _drain(
        self, entry: ModelEntry, version: int, timeout: float | None
    ) -> Coroutine[Any, Any, bool]:
        """Unload one version of ``entry``. At once it stops being served (UNLOADING); the
        coroutine returned waits until its in-flight requests finish (or ``timeout``), then
        it is finalized (UNAVAILABLE, unloaded). The coroutine's result: whether every
        in-flight request finished."""
        slot = entry.versions.get(version)
        if slot is None or slot.loaded is None:
            if slot is not None and slot.state is not ModelState.UNLOADING:
                entry.versions[version] = VersionSlot(ModelState.UNAVAILABLE, UNLOADED)
            return _true()
        placeholder = VersionSlot(ModelState.UNLOADING)
        entry.versions[version] = placeholder
        retiring = self._retire(entry, slot, timeout)

        async def finish() -> bool:
            drained = await retiring
            if entry.versions.get(version) is placeholder:
                entry.versions[version] = VersionSlot(ModelState.UNAVAILABLE, UNLOADED)
            return drained

        return finish()

    def _retire(
        self, entry: ModelEntry, slot: VersionSlot, timeout: float | None
    ) -> Coroutine[Any, Any, bool]:
        """A version no longer served (replaced, dropped or unloaded) stops accepting at once;
        the coroutine returned finishes and finalizes it."""
        loaded = slot.loaded
        loaded.accepting = False
        entry.retiring.add(slot)
        self._retiring.add(loaded)

        async def finish() -> bool:
            try:
                drained = await loaded.unload(timeout)
            finally:
                entry.retiring.discard(slot)
                self._retiring.discard(loaded)
                self._clean_temp_dirs(entry)
            self.server.plugins.hook.model_unloaded(model_name=entry.name, version=loaded.version)
            log.info("successfully unloaded '%s' version %d", entry.name, loaded.version)
            return drained

        return finish()

    def _clean_temp_dirs(self, entry: ModelEntry) -> None:
        """Remove the private folders of API-loaded models that nothing loaded uses any more."""
        used = {s.source_dir for s in entry.versions.values() if s.loaded is not None}
        used |= {s.source_dir for s in entry.retiring}
        for path in list(entry.temp_dirs - used):
            shutil.rmtree(path, ignore_errors=True)
            entry.temp_dirs.discard(path)

    # -- load actions ---------------------------------------------------------------------

    async def _load_keys(
        self,
        keys: list[ModelKey],
        scan: dict[ModelKey, list[RepositoryStore]],
        signatures: dict[ModelKey, str | None] | None = None,
        overrides: dict[ModelKey, tuple[str | None, dict[str, bytes] | None]] | None = None,
    ) -> dict[ModelKey, NereidError | None]:
        """Load (or reload) ``keys`` and the models their ensembles use that are not loaded:
        read every configuration first, then load in dependency order, in parallel. Returns
        each model's error (``None`` when it loaded). Runs under the action lock."""
        plans: dict[ModelKey, _Plan] = {}
        todo = list(dict.fromkeys(keys))
        while todo:
            new = [key for key in todo if key not in plans]
            prepared = await asyncio.gather(
                *(
                    self._prepare(
                        key,
                        scan,
                        (signatures or {}).get(key),
                        *(overrides or {}).get(key, (None, None)),
                    )
                    for key in new
                )
            )
            todo = []
            for key, plan in zip(new, prepared, strict=True):
                plans[key] = plan
                for dependency in plan.dependencies:
                    other = self.models.get(dependency)
                    loaded = other is not None and other.has_ready_version()
                    if dependency not in plans and not loaded and dependency in scan:
                        todo.append(dependency)
        self._break_cycles(plans)
        tasks: dict[ModelKey, asyncio.Task] = {}
        loop = asyncio.get_running_loop()
        for key, plan in plans.items():
            tasks[key] = loop.create_task(self._apply(plan, tasks))
        results = await asyncio.gather(*tasks.values())
        return dict(zip(tasks, results, strict=True))

    @staticmethod
    def _break_cycles(plans: dict[ModelKey, _Plan]) -> None:
        """Fail the models on a dependency cycle (they would wait for each other forever)."""
        state: dict[ModelKey, int] = {}  # 1: on the current path, 2: done

        def visit(key: ModelKey, path: list[ModelKey]) -> None:
            state[key] = 1
            for dependency in plans[key].dependencies:
                if dependency not in plans:
                    continue
                if state.get(dependency) == 1:
                    cycle = [*path[path.index(dependency) :], dependency]
                    names = " -> ".join(k[1] for k in cycle)
                    for member in cycle:
                        plans[member].error = plans[member].error or InvalidArgumentError(
                            f"failed to load '{member[1]}': circular dependency {names}"
                        )
                elif dependency not in state:
                    visit(dependency, [*path, dependency])
            state[key] = 2

        for key in plans:
            if key not in state:
                visit(key, [key])

    async def _prepare(
        self,
        key: ModelKey,
        scan: dict[ModelKey, list[RepositoryStore]],
        signature: str | None,
        override: str | None,
        files: dict[str, bytes] | None,
    ) -> _Plan:
        namespace, name = key
        entry = self.models.get(key)
        if entry is None:
            entry = ModelEntry(name, namespace)
            self._add(entry)
        plan = _Plan(entry, override, files)
        if not entry.versions:
            entry.state, entry.reason = ModelState.LOADING, ""
        try:
            await self._read(plan, scan, signature)
        except NereidError as exc:
            plan.error = exc
        except Exception as exc:  # a store's or the filesystem's own exception
            log.exception("reading model '%s' failed", name)
            plan.error = InternalError(f"failed to load '{name}': {exc}")
        return plan

    async def _read(
        self, plan: _Plan, scan: dict[ModelKey, list[RepositoryStore]], signature: str | None
    ) -> None:
        entry = plan.entry
        name = entry.name
        stores = scan.get(entry.key, [])
        config_file: str | None = None
        if plan.files is not None:
            plan.temp_dir, plan.model_dir = await asyncio.to_thread(
                self._materialize, name, plan.files
            )
            entry.temp_dirs.add(plan.temp_dir)
        else:
            if not stores:
                raise self._not_in_repository(name)
            if len(stores) > 1:
                raise InvalidArgumentError(
                    f"failed to load '{name}': the model appears in several repositories ("
                    + ", ".join(s.location for s in stores)
                    + "); rename one or enable --model-namespacing"
                )
            plan.store = store = stores[0]
            plan.signature = signature or await asyncio.to_thread(store.signature, name)
            plan.model_dir = await asyncio.to_thread(store.local_path, name)
        plan.config, plan.source, config_file = await asyncio.to_thread(
            self._read_config, plan.model_dir, name, plan.override
        )
        plan.shared_fingerprint, plan.version_fingerprints = await asyncio.to_thread(
            folder_fingerprints, plan.model_dir, config_file
        )
        key_config = ModelConfig()
        key_config.CopyFrom(plan.config)
        del key_config.instance_group[:]
        plan.config_key = _serialized(key_config)
        groups = ModelConfig()
        groups.instance_group.extend(plan.config.instance_group)
        plan.instance_groups = _serialized(groups)
        if plan.config.platform == ENSEMBLE_PLATFORM:
            plan.dependencies = [
                self._resolve(entry.namespace, step.model_name, scan)
                for step in plan.config.ensemble_scheduling.step
            ]
        available = sorted(plan.version_fingerprints)
        if plan.config.platform == ENSEMBLE_PLATFORM and not available:
            available = [1]  # an ensemble's version folder holds nothing: allow it missing
        plan.wanted = chosen_versions(plan.config, available)
        if not plan.wanted:
            raise InvalidArgumentError(
                f"failed to load '{name}': at least one version must be available under the "
                "version policy of the model"
            )

    @staticmethod
    def _materialize(name: str, files: dict[str, bytes]) -> tuple[Path, Path]:
        """Write ``file:<version>/<name>`` contents into a private model folder."""
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            # joined onto the private folder, such a name would write elsewhere
            raise InvalidArgumentError(
                f"failed to load '{name}': a model loaded with 'file:' contents needs a name "
                "that is one folder name (no '/', not '.' or '..')"
            )
        root = Path(tempfile.mkdtemp(prefix="nereid-model-"))
        model_dir = (root / name).resolve()
        model_dir.mkdir()
        try:
            for relative, content in files.items():
                pure = PurePosixPath(relative)
                target = (model_dir / relative).resolve()
                if (
                    not relative
                    or pure.is_absolute()
                    or ".." in pure.parts
                    or not target.is_relative_to(model_dir)
                    or target == model_dir
                ):
                    raise InvalidArgumentError(
                        f"failed to load '{name}': file path 'file:{relative}' is not inside "
                        "the model folder"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return root, model_dir

    def _read_config(
        self, model_dir: Path, name: str, override: str | None
    ) -> tuple[ModelConfig, str, str | None]:
        """The configuration as written: the override, ``configs/<--model-config-name>.pbtxt``,
        ``config.pbtxt``, or an empty one for auto-complete. Also its source (for messages)
        and the config file used, relative to the model folder."""
        if override is not None:
            try:
                data = json.loads(override) if override.strip() else {}
            except json.JSONDecodeError as exc:
                raise ConfigError(f"failed to load '{name}': invalid config JSON: {exc}") from None
            return config_from_json(data, f"'{name}' config override"), "config override", None
        config_name = self.server.options.model_config_name
        candidates = [f"configs/{config_name}.pbtxt"] if config_name else []
        candidates.append("config.pbtxt")
        for relative in candidates:
            path = model_dir / relative
            if path.is_file():
                return load_config_file(path), str(path), relative
        if self.server.options.disable_auto_complete_config:
            raise ConfigError(
                f"{model_dir / 'config.pbtxt'}: model configuration file not found "
                "(auto-complete is disabled)"
            )
        return ModelConfig(), str(model_dir), None

    async def _apply(self, plan: _Plan, tasks: dict[ModelKey, asyncio.Task]) -> NereidError | None:
        """Load one model of a load action once the models it uses are loaded."""
        entry = plan.entry
        if plan.error is None:
            waits = [tasks[d] for d in plan.dependencies if d in tasks and d != entry.key]
            if waits:
                await asyncio.gather(*waits)
            for dependency in plan.dependencies:
                other = self.models.get(dependency)
                if other is None or not other.has_ready_version():
                    plan.error = UnavailableError(
                        f"failed to load '{entry.name}': its step model '{dependency[1]}' "
                        "is not available"
                    )
                    break
        if plan.signature is not None:
            entry.signature = plan.signature
        if plan.error is not None:
            self._clean_temp_dirs(entry)
            if plan.files is not None and not entry.versions and entry.store is None:
                self._remove(entry)  # a model made of API payloads that never loaded
            elif not entry.versions:
                entry.state, entry.reason = ModelState.UNAVAILABLE, plan.error.message
            else:
                entry.state = ModelState.UNKNOWN
            self.server.plugins.hook.model_load_failed(
                model_name=entry.name, version=-1, error=plan.error
            )
            return plan.error
        try:
            return await self._load_versions(plan)
        finally:
            self._clean_temp_dirs(entry)

    async def _load_versions(self, plan: _Plan) -> NereidError | None:
        entry = plan.entry
        name = entry.name
        forced = plan.override is not None or plan.files is not None
        full = (
            forced
            or plan.config_key != entry.config_key
            or plan.shared_fingerprint != entry.shared_fingerprint
        )
        keep: list[VersionSlot] = []
        load: list[int] = []
        for version in plan.wanted:
            slot = entry.versions.get(version)
            serving = slot is not None and slot.state is ModelState.READY
            if (
                serving
                and not full
                and slot.source_dir == plan.temp_dir
                and slot.fingerprint == plan.version_fingerprints.get(version)
            ):
                keep.append(slot)
                continue
            load.append(version)
            if not serving:
                entry.versions[version] = VersionSlot(ModelState.LOADING)
        entry.state, entry.reason = ModelState.UNKNOWN, ""
        errors: list[str] = []
        if keep and plan.instance_groups != entry.instance_groups:
            try:
                for slot in keep:
                    await self._update_instances(slot.loaded, plan)
            except Exception as exc:
                error = NereidError.of(exc)
                log.error("updating the instances of '%s' failed: %s", name, error.message)
                errors.append(f"instance update failed: {error.message}")
        new_slots = await asyncio.gather(*(self._load_version(plan, v) for v in load))
        ready: list[tuple[int, VersionSlot]] = []
        for version, new in zip(load, new_slots, strict=True):
            old = entry.versions.get(version)
            if new.state is ModelState.READY:
                entry.versions[version] = new
                ready.append((version, new))
                if old is not None and old.loaded is not None:
                    self._spawn(self._retire(entry, old, None))
            else:
                errors.append(f"version {version} is at UNAVAILABLE state: {new.reason}")
                if old is not None and old.state is ModelState.READY:
                    log.warning(
                        "reloading '%s' version %d failed; the loaded version keeps serving",
                        name,
                        version,
                    )
                else:
                    entry.versions[version] = new
        for version, slot in list(entry.versions.items()):
            if version not in plan.wanted and slot.reason != UNLOADED:
                self._spawn(self._drain(entry, version, None))
        if ready or keep:
            entry.store = plan.store
            entry.config_key = plan.config_key
            entry.shared_fingerprint = plan.shared_fingerprint
            entry.dependencies = tuple(plan.dependencies)
            VersionTable.generation += 1
            if not errors or ready:
                entry.instance_groups = plan.instance_groups
        hook = self.server.plugins.hook
        for version, slot in ready:
            log.info("successfully loaded '%s' version %d", name, version)
            hook.model_ready(model_name=name, version=version, config=slot.loaded.config)
        if errors:
            return InvalidArgumentError(f"load failed for model '{name}': " + "; ".join(errors))
        return None

    async def _update_instances(self, loaded: LoadedModel, plan: _Plan) -> None:
        """Apply the plan's ``instance_group`` to a loaded version, with defaults filled in."""
        candidate = ModelConfig()
        candidate.CopyFrom(loaded.config)
        del candidate.instance_group[:]
        candidate.instance_group.extend(plan.config.instance_group)
        complete_and_validate(candidate, loaded.name, plan.source)
        await loaded.set_instance_groups(candidate.instance_group)

    async def _load_version(self, plan: _Plan, version: int) -> VersionSlot:
        """Build one version (``--model-load-retry-count`` retries); a slot READY or failed."""
        name = plan.entry.name
        retries = max(0, self.server.options.model_load_retry_count)
        error: NereidError = InternalError("not loaded")
        async with self._load_slots:
            log.info("loading: %s:%d", name, version)
            for attempt in range(retries + 1):
                config = ModelConfig()
                config.CopyFrom(plan.config)
                try:
                    loaded = await self._build(name, version, plan.model_dir, config, plan.source)
                except NereidError as exc:
                    error = exc
                except Exception as exc:  # a backend's own exception
                    log.exception("loading '%s' version %d failed", name, version)
                    error = NereidError.of(exc)
                else:
                    return VersionSlot(
                        ModelState.READY,
                        "",
                        loaded,
                        plan.version_fingerprints.get(version, ""),
                        plan.temp_dir,
                    )
                if attempt < retries:
                    log.warning(
                        "retrying load of '%s' version %d (%d of %d): %s",
                        name,
                        version,
                        attempt + 1,
                        retries,
                        error.message,
                    )
        log.error("failed to load '%s' version %d: %s", name, version, error.message)
        self.server.plugins.hook.model_load_failed(model_name=name, version=version, error=error)
        return VersionSlot(ModelState.UNAVAILABLE, error.message)

    async def _build(
        self, name: str, version: int, model_dir: Path, config: ModelConfig, source: str
    ) -> LoadedModel:
        """Backend model, auto-complete, defaults and validation, instances, warmup."""
        server = self.server
        started_ns = time.monotonic_ns()
        version_path = model_dir / str(version)
        model = None
        if not config.name:
            config.name = name  # backends see the name while they complete the config
        if config.platform != ENSEMBLE_PLATFORM:
            backend_name = (
                config.backend or config.platform or self._claiming_backend(model_dir, source)
            )
            entry = server.plugins.registries["backend"].find(backend_name)
            if entry is None:
                raise missing_backend_error(backend_name, source)
            if not config.backend:
                config.backend = entry.name
            backend = await asyncio.to_thread(server.backend, entry)
            model = await asyncio.to_thread(backend.create_model, config, version_path)
        try:
            if model is not None and not server.options.disable_auto_complete_config:
                await asyncio.to_thread(model.complete_config, config)
            complete_and_validate(config, name, source)
            server.plugins.hook.model_loading(model_name=name, version=version, config=config)
            loaded = LoadedModel(server, name, version, config, version_path, model)
            await loaded.start(server.plugins.registries["scheduler"])
            loaded.load_duration_ns = time.monotonic_ns() - started_ns
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


async def _true() -> bool:
    return True
