"""Server options: tritonserver's flags for what the kernel covers, plus every plugin's.

The same parser serves ``nereid serve`` and ``Server(**options)``, so an option has one name,
one default and one meaning everywhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .config import boolean_word
from .errors import InvalidArgumentError
from .plugins import PluginSystem

CONTROL_MODES = ("none", "poll", "explicit")


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    flag = boolean_word(value)
    if flag is not None:
        return flag
    raise argparse.ArgumentTypeError(f"expected a boolean, got '{value}'")


def add_plugin_knobs(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("plugins")
    group.add_argument(
        "--disable-plugin-autoload",
        action="store_true",
        help="load no third-party plugins (env NEREID_DISABLE_PLUGIN_AUTOLOAD)",
    )
    group.add_argument(
        "--plugins",
        dest="plugin_allow",
        action="append",
        default=[],
        metavar="DIST",
        help="load plugins only from these distributions "
        "(repeatable or comma separated; env NEREID_PLUGINS)",
    )
    group.add_argument(
        "--block-plugin",
        dest="plugin_block",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load the plugin of this entry-point name "
        "(repeatable; env NEREID_BLOCK_PLUGINS)",
    )


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    """tritonserver's flags for what the kernel covers, with their names, defaults and meanings.

    Boolean flags take a value as tritonserver's do (``--exit-on-error=false``,
    ``--strict-readiness false``); ``--disable-auto-complete-config`` takes none.
    """
    repo = parser.add_argument_group("model repository")
    repo.add_argument(
        "--model-repository",
        "--model-store",
        dest="model_repository",
        action="append",
        default=[],
        metavar="PATH",
        help="a model repository: a local path or a store URL such as s3://... (repeatable)",
    )
    repo.add_argument(
        "--model-control-mode",
        choices=CONTROL_MODES,
        type=str.lower,
        default="none",
        help="none: load every model at start-up; poll: also apply repository changes every "
        "--repository-poll-secs; explicit: load --load-model at start-up, then through the "
        "load/unload API",
    )
    repo.add_argument(
        "--load-model",
        dest="load_model",
        action="append",
        default=[],
        metavar="NAME",
        help="model to load at start-up in explicit mode ('*' for all; repeatable)",
    )
    repo.add_argument(
        "--repository-poll-secs",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="interval between repository polls in poll mode (0: no automatic poll)",
    )
    repo.add_argument(
        "--model-config-name",
        default="",
        metavar="NAME",
        help="load <model>/configs/<NAME>.pbtxt instead of config.pbtxt where present",
    )
    repo.add_argument(
        "--disable-auto-complete-config",
        action="store_true",
        help="do not let backends complete model configurations from the model files",
    )
    repo.add_argument(
        "--strict-model-config",
        type=str2bool,
        default=None,
        metavar="BOOL",
        help="old name of --disable-auto-complete-config",
    )
    repo.add_argument(
        "--backend-config",
        dest="backend_config",
        action="append",
        default=[],
        metavar="<backend>,<setting>=<value>",
        help="a backend setting; without '<backend>,' for every backend (repeatable)",
    )
    repo.add_argument(
        "--model-load-thread-count",
        type=int,
        default=4,
        metavar="N",
        help="model versions loaded in parallel",
    )
    repo.add_argument(
        "--model-load-retry-count",
        type=int,
        default=0,
        metavar="N",
        help="retries of a model version that fails to load",
    )
    repo.add_argument(
        "--model-namespacing",
        type=str2bool,
        default=False,
        metavar="BOOL",
        help="allow models of the same name in different repositories",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--id", default="nereid", help="server identifier")
    server.add_argument(
        "--allow-client-shm",
        type=str2bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="let clients register system shared-memory regions and use them for tensors, "
        "over every frontend (default false, as current tritonserver)",
    )
    server.add_argument(
        "--strict-readiness",
        type=str2bool,
        default=True,
        metavar="BOOL",
        help="server ready only while every model that should be loaded is ready",
    )
    server.add_argument(
        "--exit-on-error",
        type=str2bool,
        default=True,
        metavar="BOOL",
        help="fail to start when a start-up model fails to load",
    )
    server.add_argument(
        "--gc-threshold",
        type=int,
        default=10_000,
        metavar="N",
        help="while serving, the cyclic garbage collector's first-generation threshold "
        "(default 10000; 0 leaves Python's, 700): requests in flight are short-lived objects "
        "that the default counts as reasons to collect",
    )
    server.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long in-flight requests get to finish",
    )
    log = parser.add_argument_group("logging")
    log.add_argument(
        "--log-verbose", type=int, default=0, metavar="LEVEL", help="verbose logging level"
    )
    log.add_argument("--log-info", type=str2bool, default=True, metavar="BOOL")
    log.add_argument("--log-warning", type=str2bool, default=True, metavar="BOOL")
    log.add_argument("--log-error", type=str2bool, default=True, metavar="BOOL")
    log.add_argument("--log-format", choices=("default", "ISO8601"), default="default")
    log.add_argument("--log-file", default="", metavar="PATH", help="log here, not to stderr")


def build_parser(plugins: PluginSystem, prog: str = "nereid serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    add_plugin_knobs(parser)
    add_kernel_options(parser)
    plugins.hook.add_cli_options(parser=parser)
    return parser


def resolve_options(plugins: PluginSystem, overrides: dict[str, Any]) -> argparse.Namespace:
    """Every option at its default, with ``overrides`` (keyword names) laid over them."""
    options = build_parser(plugins).parse_args([])
    for key, value in overrides.items():
        if not hasattr(options, key):
            raise InvalidArgumentError(f"unknown server option '{key}'")
        setattr(options, key, value)
    return finish_options(options)


def finish_options(options: argparse.Namespace) -> argparse.Namespace:
    """Derived values: the old flag name folded into the new, lists where a keyword option
    may give one value, and the checks argparse makes for flags done for keywords too."""
    if options.strict_model_config is not None:
        options.disable_auto_complete_config = (
            options.disable_auto_complete_config or options.strict_model_config
        )
    for key in ("model_repository", "load_model", "backend_config"):
        value = getattr(options, key)
        if isinstance(value, str | Path):
            value = [value]
        setattr(options, key, [str(item) for item in value])
    options.model_control_mode = str(options.model_control_mode).lower()
    if options.model_control_mode not in CONTROL_MODES:
        raise InvalidArgumentError(
            f"invalid model control mode '{options.model_control_mode}', expect one of "
            + ", ".join(CONTROL_MODES)
        )
    for key in ("model_load_thread_count", "model_load_retry_count"):
        if getattr(options, key) < (1 if key == "model_load_thread_count" else 0):
            raise InvalidArgumentError(f"invalid {key}: {getattr(options, key)}")
    return options
