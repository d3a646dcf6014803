"""Per-model Python environments: EXECUTION_ENV_PATH (a folder or a packed archive) and
requirements.txt beside model.py. Process mode only; asking for one in thread mode fails the
load. The environments are made once per module (creating a venv is slow)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from nereid.testing import make_request

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"

CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
PARAMETERS
"""

SOURCE = """
import numpy as np
import triton_python_backend_utils as pb_utils
import MODULE


class TritonPythonModel:
    def execute(self, requests):
        value = np.array([MODULE.VALUE.encode()], dtype=object)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", value)]) for _ in requests]
"""


def _env_parameter(path: str) -> str:
    return f'parameters {{ key: "EXECUTION_ENV_PATH" value: {{ string_value: "{path}" }} }}'


def _model(repo, name, module, parameters="", requirements=None):
    files = {"model.py": SOURCE.replace("MODULE", module)}
    if requirements is not None:
        files["requirements.txt"] = requirements
    return repo.add(name, CONFIG.replace("PARAMETERS", parameters), versions={1: files})


@pytest.fixture(scope="module")
def environment(tmp_path_factory) -> Path:
    """A venv (``--system-site-packages``) holding the module ``nereid_env_marker``."""
    root = tmp_path_factory.mktemp("envs") / "env"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
        check=True,
    )
    site = root / "lib" / PY / "site-packages"
    (site / "nereid_env_marker.py").write_text('VALUE = "from the environment"\n')
    return root


@pytest.fixture(scope="module")
def packed(environment, tmp_path_factory) -> Path:
    """The venv folder packed as a tar.gz (as ``tar czf env.tar.gz -C env .`` would)."""
    archive = tmp_path_factory.mktemp("packed") / "env.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(environment, arcname=".")
    return archive


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """A folder holding the wheel of a trivial package ``nereid-req-marker`` 1.0."""
    folder = tmp_path_factory.mktemp("wheels")
    info = "nereid_req_marker-1.0.dist-info"
    files = {
        "nereid_req_marker/__init__.py": 'VALUE = "from requirements.txt"\n',
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: nereid-req-marker\nVersion: 1.0\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / "nereid_req_marker-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr(f"{info}/RECORD", record)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("env_cache")


async def _value(server, name: str) -> str:
    request = make_request(name, {"IN": np.array([0], np.int32)})
    response = await server.api.infer(request).single()
    return response.as_numpy("OUT")[0].decode()


def _reasons(server) -> dict[str, str]:
    return {m["name"]: m.get("reason", "") for m in server.api.repository_index()}


THREAD_ERROR = "needs execution_mode 'process'"


async def test_environment_folder_and_archive(
    start_server, model_repository, execution_mode, environment, packed, cache_dir
):
    _model(model_repository, "folder", "nereid_env_marker", _env_parameter(str(environment)))
    model_dir = _model(
        model_repository,
        "archive",
        "nereid_env_marker",
        _env_parameter("$$TRITON_MODEL_DIRECTORY/env.tar.gz"),
    )
    shutil.copy(packed, model_dir / "env.tar.gz")
    server = await start_server(
        exit_on_error=False, backend_config=[f"python,env-cache-dir={cache_dir}"]
    )
    if execution_mode == "thread":
        reasons = _reasons(server)
        assert THREAD_ERROR in reasons["folder"]
        assert THREAD_ERROR in reasons["archive"]
        return
    assert await _value(server, "folder") == "from the environment"
    assert await _value(server, "archive") == "from the environment"
    assert any(p.name.startswith("packed-") for p in cache_dir.iterdir())
    assert "nereid_env_marker" not in sys.modules  # the server's own environment is untouched


async def test_environment_for_another_python_fails_the_load(
    start_server, model_repository, execution_mode, tmp_path
):
    other = tmp_path / "py27"
    (other / "lib" / "python2.7" / "site-packages").mkdir(parents=True)
    _model(model_repository, "old", "json", _env_parameter(str(other)))
    _model(model_repository, "missing", "json", _env_parameter(str(tmp_path / "nowhere")))
    server = await start_server(exit_on_error=False)
    reasons = _reasons(server)
    if execution_mode == "thread":
        assert THREAD_ERROR in reasons["old"]
        return
    assert "is for Python 2.7, but the server runs Python" in reasons["old"]
    assert "is neither an environment folder nor an archive" in reasons["missing"]


async def test_requirements_txt(
    start_server, model_repository, execution_mode, wheels, cache_dir, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="nereid.python")
    # pip inherits the server's environment: keep this machine's pip configuration (indexes,
    # find-links folders to scan) out of the test.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    requirements = f"--no-index\n--find-links {wheels}\nnereid-req-marker==1.0\n"
    _model(model_repository, "first", "nereid_req_marker", requirements=requirements)
    _model(model_repository, "second", "nereid_req_marker", requirements=requirements)
    failing = f"--no-index\n--find-links {wheels}\nnereid-no-such-package==9.9\n"
    _model(model_repository, "failing", "json", requirements=failing)
    server = await start_server(
        exit_on_error=False, backend_config=[f"python,env-cache-dir={cache_dir}"]
    )
    reasons = _reasons(server)
    if execution_mode == "thread":
        assert THREAD_ERROR in reasons["first"]
        return
    assert await _value(server, "first") == "from requirements.txt"
    assert await _value(server, "second") == "from requirements.txt"
    # Installed once (pip's output in the log); the other load found it in the cache.
    messages = [r.getMessage() for r in caplog.records]
    ours = [m for m in messages if "'failing'" not in m]
    assert sum("requirements.txt: installing into" in m for m in ours) == 1
    assert sum("requirements.txt: using the cached environment" in m for m in ours) == 1
    assert any("Successfully installed nereid-req-marker-1.0" in m for m in messages)
    assert "installing requirements.txt failed" in reasons["failing"]
    assert "nereid-no-such-package" in reasons["failing"]
