"""Server options: tritonserver's flags for what the kernel covers, plus every plugin's.

The same parser serves ``nereid serve`` and ``Server(**options)``, so an option has one name,
one default and one meaning everywhere.
"""

from __future__ import annotations

import argparse
from typing import Any

from .errors import InvalidArgumentError
from .plugins import PluginSystem


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
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
    repo = parser.add_argument_group("model repository")
    repo.add_argument(
        "--model-repository",
        "--model-store",
        dest="model_repository",
        action="append",
        default=[],
        help="a model repository (repeatable)",
    )
    repo.add_argument("--model-control-mode", choices=("none", "poll", "explicit"), default="none")
    repo.add_argument(
        "--load-model",
        dest="load_model",
        action="append",
        default=[],
        help="model to load at start-up in explicit mode ('*' for all)",
    )
    repo.add_argument("--repository-poll-secs", type=float, default=15.0)
    repo.add_argument(
        "--model-config-name",
        default="",
        help="load configs/<name>.pbtxt instead of config.pbtxt where present",
    )
    repo.add_argument("--disable-auto-complete-config", action="store_true")
    repo.add_argument(
        "--strict-model-config",
        type=str2bool,
        default=None,
        help="old name of --disable-auto-complete-config",
    )
    repo.add_argument(
        "--backend-config",
        dest="backend_config",
        action="append",
        default=[],
        help="<backend>,<setting>=<value>",
    )
    repo.add_argument("--model-load-thread-count", type=int, default=4)
    repo.add_argument("--model-load-retry-count", type=int, default=0)
    repo.add_argument("--model-namespacing", type=str2bool, default=False)
    server = parser.add_argument_group("server")
    server.add_argument("--id", default="nereid", help="server identifier")
    server.add_argument("--strict-readiness", type=str2bool, default=True)
    server.add_argument("--exit-on-error", type=str2bool, default=True)
    server.add_argument("--exit-timeout-secs", type=float, default=30.0)
    log = parser.add_argument_group("logging")
    log.add_argument("--log-verbose", type=int, default=0)
    log.add_argument("--log-info", type=str2bool, default=True)
    log.add_argument("--log-warning", type=str2bool, default=True)
    log.add_argument("--log-error", type=str2bool, default=True)
    log.add_argument("--log-format", choices=("default", "ISO8601"), default="default")
    log.add_argument("--log-file", default="")


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
    """Derived values: the old flag name folded into the new, repositories as a list."""
    if options.strict_model_config is not None:
        options.disable_auto_complete_config = (
            options.disable_auto_complete_config or options.strict_model_config
        )
    if isinstance(options.model_repository, str):
        options.model_repository = [options.model_repository]
    options.model_repository = [str(p) for p in options.model_repository]
    return options
