"""Regenerate Nereid's checked-in protobuf modules (``*_pb2.py`` and ``*_pb2.pyi``).

The generated code is committed so that installing Nereid needs no protobuf
compiler. Run this script after editing any ``.proto`` listed in ``PROTOS``;
the drift tests regenerate into a temporary directory with ``--out`` and
fail if the result differs from what is checked in.

Usage::

    python scripts/gen_protos.py            # rewrite the files in place
    python scripts/gen_protos.py --out DIR  # write under DIR, same relative layout
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# (include root, proto path relative to that root). The proto path is also the
# name the file is registered under in protobuf's descriptor pool, and the
# generated modules land next to the .proto file.
PROTOS: tuple[tuple[str, str], ...] = (
    ("kernel/src", "nereid/config/model_config.proto"),
    ("frontends/grpc/src", "nereid_grpc/protos/grpc_service.proto"),
    ("frontends/grpc/src", "nereid_grpc/protos/health.proto"),
)

INCLUDE_ROOTS: tuple[str, ...] = tuple(dict.fromkeys(root for root, _ in PROTOS))


def generated_files(root: str, proto: str) -> list[str]:
    """Repository-relative paths of the modules generated for one proto."""
    stem = str(Path(root) / proto)[: -len(".proto")]
    return [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]


def all_generated_files() -> list[str]:
    return [path for root, proto in PROTOS for path in generated_files(root, proto)]


def _well_known_types_dir() -> str | None:
    try:
        import grpc_tools
    except ImportError:
        return None
    path = Path(grpc_tools.__file__).parent / "_proto"
    return str(path) if path.is_dir() else None


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto in PROTOS, writing under ``out_dir``; return the written files."""
    includes = [f"-I{REPO_ROOT / root}" for root in INCLUDE_ROOTS]
    wkt = _well_known_types_dir()
    if wkt is not None:
        includes.append(f"-I{wkt}")

    written: list[Path] = []
    for root, proto in PROTOS:
        target = out_dir / root
        target.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *includes,
            f"--python_out={target}",
            f"--pyi_out={target}",
            proto,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed for {proto}:\n{result.stderr}")
        written.extend(out_dir / path for path in generated_files(root, proto))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT,
        help="directory to write into, mirroring the repository layout (default: in place)",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out.resolve()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
