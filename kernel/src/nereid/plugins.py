"""Plugin discovery and the registries that plugins fill.

One :class:`PluginSystem` per :class:`~nereid.server.Server`: a pluggy manager, the plugins found
through the ``nereid`` entry-point group (filtered by the autoload, allow and block knobs), and
one :class:`Registry` per kind of thing plugins register.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import AlreadyExistsError, NotFoundError

ENTRY_POINT_GROUP = "nereid"
KERNEL_DISTRIBUTION = "nereid"

ENV_DISABLE_AUTOLOAD = "NEREID_DISABLE_PLUGIN_AUTOLOAD"
ENV_ALLOW = "NEREID_PLUGINS"
ENV_BLOCK = "NEREID_BLOCK_PLUGINS"

REGISTRY_KINDS = ("backend", "scheduler", "frontend", "repository_store")


@dataclass
class RegistryEntry:
    """A name plus a lazy target (``"module:attr"`` or an object), and who registered it."""

    kind: str
    name: str
    target: str | Callable[..., Any]
    distribution: str
    plugin: str
    aliases: tuple[str, ...] = ()
    model_filenames: tuple[str, ...] = ()
    _loaded: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """Import the target on first use (this is where a framework gets imported)."""
        if self._loaded is None:
            if isinstance(self.target, str):
                module_name, _, attr = self.target.partition(":")
                obj: Any = importlib.import_module(module_name)
                for part in attr.split(".") if attr else ():
                    obj = getattr(obj, part)
                self._loaded = obj
            else:
                self._loaded = self.target
        return self._loaded

    def describe(self) -> dict[str, Any]:
        target = self.target if isinstance(self.target, str) else _qualname(self.target)
        info: dict[str, Any] = {"name": self.name, "target": target}
        if self.aliases:
            info["aliases"] = list(self.aliases)
        if self.model_filenames:
            info["model_filenames"] = list(self.model_filenames)
        return info


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    """Named entries of one kind. Names and aliases are unique across distributions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry] = {}
        self._aliases: dict[str, str] = {}

    def scoped(self, distribution: str, plugin: str) -> ScopedRegistry:
        return ScopedRegistry(self, distribution, plugin)

    def _add(self, entry: RegistryEntry) -> None:
        for key in (entry.name, *entry.aliases):
            owner_name = self._aliases.get(key, key)
            other = self._entries.get(owner_name)
            if other is not None:
                raise AlreadyExistsError(
                    f"{self.kind} '{key}' is registered by both distribution "
                    f"'{other.distribution}' (plugin '{other.plugin}') and distribution "
                    f"'{entry.distribution}' (plugin '{entry.plugin}')"
                )
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name

    def find(self, name: str) -> RegistryEntry | None:
        """The entry registered under ``name`` or an alias of it."""
        return self._entries.get(self._aliases.get(name, name))

    def get(self, name: str) -> RegistryEntry:
        entry = self.find(name)
        if entry is None:
            raise NotFoundError(f"no {self.kind} named '{name}' is installed")
        return entry

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    def __iter__(self):
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return sorted(self._entries)


class ScopedRegistry:
    """The view of a registry that one plugin's registration hook receives."""

    def __init__(self, registry: Registry, distribution: str, plugin: str) -> None:
        self._registry = registry
        self.distribution = distribution
        self.plugin = plugin

    def add(
        self,
        name: str,
        target: str | Callable[..., Any],
        *,
        aliases: Sequence[str] = (),
        model_filenames: Sequence[str] = (),
    ) -> None:
        self._registry._add(
            RegistryEntry(
                kind=self._registry.kind,
                name=name,
                target=target,
                distribution=self.distribution,
                plugin=self.plugin,
                aliases=tuple(aliases),
                model_filenames=tuple(model_filenames),
            )
        )


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@dataclass
class PluginSettings:
    """The knobs that choose which plugins load (each also an environment variable)."""

    autoload: bool = True
    allow: list[str] | None = None  # distributions; None means all
    block: list[str] = field(default_factory=list)  # plugin (entry point) names

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PluginSettings:
        env = os.environ if environ is None else environ
        allow = _split(env.get(ENV_ALLOW))
        return cls(
            autoload=env.get(ENV_DISABLE_AUTOLOAD, "").lower() not in ("1", "true", "yes"),
            allow=allow or None,
            block=_split(env.get(ENV_BLOCK)),
        )

    def merged(
        self,
        *,
        disable_autoload: bool = False,
        allow: Iterable[str] = (),
        block: Iterable[str] = (),
    ) -> PluginSettings:
        """These settings with command-line flags laid over them."""
        allow_list = [*(self.allow or []), *allow]
        return PluginSettings(
            autoload=self.autoload and not disable_autoload,
            allow=allow_list or None,
            block=[*self.block, *block],
        )


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str


class PluginSystem:
    """The plugin manager of one server, with its registries."""

    def __init__(self, settings: PluginSettings | None = None) -> None:
        self.settings = settings or PluginSettings.from_env()
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.registries = {kind: Registry(kind) for kind in REGISTRY_KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self._registered_by: dict[str, dict[str, list[str]]] = {}
        self._collected = False

    @property
    def hook(self) -> Any:
        return self.manager.hook

    # -- discovery -------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Register every permitted plugin of the ``nereid`` entry-point group."""
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            if not self._permitted(ep.name, dist):
                continue
            if ep.name in self.plugins:
                other = self.plugins[ep.name]
                raise AlreadyExistsError(
                    f"plugin '{ep.name}' is provided by both distribution "
                    f"'{other.distribution}' and distribution '{dist}'"
                )
            module = ep.load()
            self.register(module, name=ep.name, distribution=dist, version=version)

    def _permitted(self, name: str, distribution: str) -> bool:
        if name in self.settings.block:
            return False
        if _normalize(distribution) == KERNEL_DISTRIBUTION:
            return True
        if not self.settings.autoload:
            return False
        allow = self.settings.allow
        return allow is None or _normalize(distribution) in {_normalize(a) for a in allow}

    def register(
        self,
        plugin: ModuleType | object,
        *,
        name: str | None = None,
        distribution: str = "<in-process>",
        version: str = "",
    ) -> None:
        """Register a plugin object by hand (tests and embedding use this)."""
        if self._collected:
            raise RuntimeError("plugins must be registered before the server is assembled")
        plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if plugin_name in self.settings.block:
            return
        self.manager.register(plugin, name=plugin_name)
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self.plugins[plugin_name] = PluginInfo(plugin_name, distribution, version, module)

    def check_pending(self) -> None:
        """Fail on a hook implementation that matches no hook spec (a typo in a plugin)."""
        self.manager.check_pending()

    # -- registration ----------------------------------------------------------------------

    def collect_registrations(self) -> None:
        """Run every registration hook once per plugin, scoped to its distribution."""
        if self._collected:
            return
        self._collected = True
        for kind in REGISTRY_KINDS:
            hook = getattr(self.manager.hook, f"register_{kind}s")
            registry = self.registries[kind]
            for impl in reversed(hook.get_hookimpls()):  # registration order
                info = self.plugins.get(impl.plugin_name)
                distribution = info.distribution if info else "<in-process>"
                before = set(registry.names())
                impl.function(registry=registry.scoped(distribution, impl.plugin_name))
                added = sorted(set(registry.names()) - before)
                if added:
                    self._registered_by.setdefault(impl.plugin_name, {})[kind] = added

    def describe(self) -> list[dict[str, Any]]:
        """Each plugin with its distribution, version and what it registered."""
        self.collect_registrations()
        out = []
        for info in self.plugins.values():
            registered = {
                kind: [self.registries[kind].get(n).describe() for n in names]
                for kind, names in self._registered_by.get(info.name, {}).items()
            }
            hooks = sorted(
                hc.name
                for hc in self.manager.get_hookcallers(self.manager.get_plugin(info.name)) or ()
            )
            out.append(
                {
                    "name": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "module": info.module,
                    "registered": registered,
                    "hooks": hooks,
                }
            )
        return out


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
