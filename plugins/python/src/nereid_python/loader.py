"""Finding and importing a model's Python file.

Triton's rules: the file is ``<model>/<version>/model.py``, or the ``default_model_filename``
the configuration names. It is imported as a module of a package that is its version folder
(so ``from . import helper`` works), and the version folder is on ``sys.path`` while the model
is loaded (so ``import helper`` works too). Every model version gets module names of its own,
so two models' ``model.py`` never clash.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import re
import sys
import threading
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the model process imports this module without the kernel
    from nereid.config import ModelConfig

DEFAULT_FILENAME = "model.py"
CLASS_NAME = "TritonPythonModel"
# `runtime` values that name the Python backend itself rather than a model file.
_BACKEND_RUNTIMES = ("", "libtriton_python.so", "python")

_serial = itertools.count(1)
# sys.path entries added for model folders, counted: two loaded versions may share a folder.
_path_users: dict[str, int] = {}
_path_lock = threading.Lock()


def model_file_path(config: ModelConfig, version_path: Path) -> Path:
    """The Python file of a model version (Triton's rules, see the module docstring).

    ``runtime: "<file>.py"`` is Triton's form for a Python-based backend, whose shared
    ``model.py`` lives outside the version folder: here the file is looked up in the version
    folder, then in the model folder (one file shared by every version).
    """
    from nereid.errors import InvalidArgumentError, NotFoundError

    runtime = config.runtime
    if runtime not in _BACKEND_RUNTIMES:
        if not runtime.endswith(".py") or Path(runtime).name != runtime:
            raise InvalidArgumentError(
                f"model '{config.name or version_path.parent.name}': runtime '{runtime}' is not "
                "supported by the python backend (use a Python file name, such as 'model.py')"
            )
        for folder in (version_path, version_path.parent):
            if (folder / runtime).is_file():
                return folder / runtime
        raise NotFoundError(f"Python model file not found in '{version_path / runtime}'")
    filename = config.default_model_filename or DEFAULT_FILENAME
    if Path(filename).name != filename:
        raise InvalidArgumentError(
            f"default_model_filename '{filename}' must be a file name, not a path"
        )
    path = version_path / filename
    if not path.is_file():
        raise NotFoundError(f"Python model file not found in '{path}'")
    return path


class MissingClassError(Exception):
    """The model file defines no ``TritonPythonModel`` class."""


class ModelFile:
    """A model's Python file, imported once (on first use) and forgotten by :meth:`unload`."""

    def __init__(self, path: Path | str, label: str) -> None:
        self.path = Path(path)
        self.label = label
        slug = re.sub(r"\W", "_", label)
        self.package = f"_nereid_python_models.{slug}_{next(_serial)}"
        self.module: types.ModuleType | None = None
        self._folder = str(self.path.parent)
        self._on_path = False
        self._lock = threading.Lock()

    def load(self) -> types.ModuleType:
        with self._lock:
            if self.module is None:
                self.module = self._import()
            return self.module

    def model_class(self) -> type:
        module = self.load()
        cls = getattr(module, CLASS_NAME, None)
        if not isinstance(cls, type):
            raise MissingClassError(
                f"Python model file '{self.path}' does not define class '{CLASS_NAME}'"
            )
        return cls

    def _import(self) -> types.ModuleType:
        _ensure_root()
        package = types.ModuleType(self.package)
        package.__path__ = [self._folder]
        package.__package__ = self.package
        package.__spec__ = importlib.machinery.ModuleSpec(self.package, None, is_package=True)
        package.__spec__.submodule_search_locations = [self._folder]
        sys.modules[self.package] = package
        name = f"{self.package}.{self.path.stem}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _add_path(self._folder)
        self._on_path = True
        try:
            spec.loader.exec_module(module)
        except BaseException:
            self.unload()
            raise
        return module

    def unload(self) -> None:
        """Forget the modules imported from the version folder, and take it off ``sys.path``."""
        prefix = self.package + "."
        # A snapshot first: other threads import (models load in parallel) while this runs.
        for name in [n for n in list(sys.modules) if n == self.package or n.startswith(prefix)]:
            sys.modules.pop(name, None)
        if self._on_path:
            _remove_path(self._folder)
            self._on_path = False
        self.module = None


def _add_path(folder: str) -> None:
    with _path_lock:
        users = _path_users.get(folder, 0)
        if users == 0:
            if folder in sys.path:
                users = 1  # was there before us: never take it off
            else:
                sys.path.append(folder)
        _path_users[folder] = users + 1


def _remove_path(folder: str) -> None:
    with _path_lock:
        users = _path_users.get(folder, 0) - 1
        if users > 0:
            _path_users[folder] = users
            return
        _path_users.pop(folder, None)
        try:
            sys.path.remove(folder)
        except ValueError:
            pass


def _ensure_root() -> None:
    if "_nereid_python_models" not in sys.modules:
        root: Any = types.ModuleType("_nereid_python_models")
        root.__path__ = []
        sys.modules["_nereid_python_models"] = root
