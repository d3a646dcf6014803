"""Per-model Python environments, for models in processes of their own.

- ``EXECUTION_ENV_PATH`` (Triton's parameter): a virtual-environment folder, or a ``tar.gz``
  made by conda-pack or venv-pack (or ``tar czf`` of a venv folder), unpacked once into the
  cache folder. ``$$TRITON_MODEL_DIRECTORY`` in it is the model's folder.
- ``requirements.txt`` beside the model file (a Nereid extension): installed on load into an
  environment of its own (``python -m venv --system-site-packages`` + ``pip install -r``),
  cached under a hash of the file and the Python version, so the next load reuses it.

The model process runs the server's interpreter with the environment's ``site-packages`` put
first on ``sys.path`` (``.pth`` files processed), ``VIRTUAL_ENV`` set and its ``bin`` first on
``PATH``: what the model imports comes from the environment first, then from the server's. An
environment made for another Python version fails the load.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nereid.errors import InvalidArgumentError

log = logging.getLogger("nereid.python")

ENV_PARAMETER = "EXECUTION_ENV_PATH"
REQUIREMENTS = "requirements.txt"
_PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
_READY = ".nereid-ready"


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"nereid_python_envs_{os.getuid()}")


@dataclass(frozen=True)
class Environment:
    """What a model process needs of its environments: their roots and site-packages."""

    roots: tuple[str, ...] = ()
    site_dirs: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        return {"env_roots": list(self.roots), "env_site": list(self.site_dirs)}


def wanted(parameters: Any, model_file: Path) -> bool:
    """Whether the model asks for an environment of its own."""
    return ENV_PARAMETER in parameters or (model_file.parent / REQUIREMENTS).is_file()


def prepare(
    name: str, parameters: Any, model_dir: Path, model_file: Path, cache_dir: str
) -> Environment:
    """Find, unpack or build the model's environments (may take a while: off the loop)."""
    roots: list[Path] = []
    requirements = model_file.parent / REQUIREMENTS
    if requirements.is_file():
        roots.append(_requirements_env(name, requirements, Path(cache_dir)))
    if ENV_PARAMETER in parameters:
        text = parameters[ENV_PARAMETER].string_value
        text = text.replace("$$TRITON_MODEL_DIRECTORY", str(model_dir))
        roots.append(_execution_env(name, Path(text), Path(cache_dir)))
    site_dirs = [str(_site_packages(name, root)) for root in roots]
    return Environment(tuple(str(r) for r in roots), tuple(site_dirs))


# -- EXECUTION_ENV_PATH ---------------------------------------------------------------------------


def _execution_env(name: str, path: Path, cache: Path) -> Path:
    if path.is_dir():
        return _env_root(path)
    if not path.is_file():
        raise InvalidArgumentError(
            f"model '{name}': {ENV_PARAMETER} '{path}' is neither an environment folder nor an "
            "archive"
        )
    if not path.name.endswith((".tar.gz", ".tgz")):
        raise InvalidArgumentError(
            f"model '{name}': {ENV_PARAMETER} '{path}': expected a folder or a .tar.gz archive"
        )
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache / f"packed-{key.hexdigest()[:20]}"
    with _locked(cache, target.name):
        if not (target / _READY).exists():
            log.info("model '%s': unpacking %s into %s", name, path, target)
            staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=cache))
            try:
                with tarfile.open(path, "r:*") as archive:
                    if hasattr(tarfile, "tar_filter"):
                        archive.extractall(staging, filter="tar")
                    else:  # pragma: no cover - Pythons without extraction filters
                        archive.extractall(staging)
                (staging / _READY).write_text(str(path))
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
            except (OSError, tarfile.TarError) as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise InvalidArgumentError(
                    f"model '{name}': cannot unpack {ENV_PARAMETER} '{path}': {exc}"
                ) from None
        else:
            log.info("model '%s': using %s, unpacked from %s", name, target, path)
    return _env_root(target)


def _env_root(path: Path) -> Path:
    """The environment's root: the folder itself, or its one sub-folder holding ``lib``."""
    if (path / "lib").is_dir():
        return path
    children = [p for p in path.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "lib").is_dir():
        return children[0]
    return path


def _site_packages(name: str, root: Path) -> Path:
    site = root / "lib" / _PY / "site-packages"
    if site.is_dir():
        return site
    others = sorted(p.parent.name for p in root.glob("lib/python*/site-packages"))
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if others:
        versions = ", ".join(o.removeprefix("python") for o in others)
        raise InvalidArgumentError(
            f"model '{name}': the Python environment '{root}' is for Python {versions}, but the "
            f"server runs Python {here}: make the environment with Python {here}"
        )
    raise InvalidArgumentError(
        f"model '{name}': '{root}' is not a Python environment (no lib/{_PY}/site-packages)"
    )


# -- requirements.txt ------------------------------------------------------------------------


def _requirements_env(name: str, requirements: Path, cache: Path) -> Path:
    content = requirements.read_bytes()
    version = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"
    key = hashlib.sha256(content + b"\0" + version.encode()).hexdigest()[:20]
    target = cache / f"requirements-{key}"
    with _locked(cache, target.name):
        if (target / _READY).exists():
            log.info("model '%s': requirements.txt: using the cached environment %s", name, target)
            return target
        log.info("model '%s': requirements.txt: installing into %s", name, target)
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=cache))
        try:
            _run(
                name,
                [
                    sys.executable,
                    "-m",
                    "venv",
                    "--system-site-packages",
                    "--without-pip",
                    str(staging),
                ],
                "creating the environment",
            )
            python = staging / "bin" / "python"
            _run(
                name,
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python),
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-r",
                    str(requirements),
                ],
                "installing requirements.txt",
                cwd=requirements.parent,
            )
            (staging / _READY).write_text(str(requirements))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _run(name: str, command: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise InvalidArgumentError(f"model '{name}': {what} failed: {exc}") from None
    lines = done.stdout.splitlines()
    for line in lines:
        log.info("model '%s': %s: %s", name, what, line)
    if done.returncode != 0:
        tail = "\n".join(lines[-15:])
        raise InvalidArgumentError(
            f"model '{name}': {what} failed (exit code {done.returncode}):\n{tail}"
        )


@contextlib.contextmanager
def _locked(cache: Path, name: str):
    """Serialize the preparation of one environment between loads and servers."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
