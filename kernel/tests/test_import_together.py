"""Every nereid module imports in one process with tritonclient's gRPC and HTTP clients
(whose proto package is Triton's own ``inference``)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import importlib, pkgutil
import tritonclient.grpc, tritonclient.http, tritonclient.grpc.model_config_pb2
names = []
for dist_pkg in ("nereid", "nereid_http", "nereid_grpc", "nereid_example_backend"):
    try:
        pkg = importlib.import_module(dist_pkg)
    except ModuleNotFoundError:
        continue
    names.append(dist_pkg)
    for info in pkgutil.walk_packages(pkg.__path__, dist_pkg + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(len(names))
"""


def test_all_modules_import_with_tritonclient():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 20
