"""``nereid``: ``serve`` (tritonserver's flags) and ``plugins`` (what is installed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from .errors import NereidError
from .options import add_plugin_knobs, build_parser, finish_options
from .plugins import PluginSettings, PluginSystem

log = logging.getLogger("nereid")


def _plugin_system(argv: Sequence[str]) -> PluginSystem:
    """Plugins chosen by the knobs, which must be read before the plugins' own flags exist."""
    knobs = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_plugin_knobs(knobs)
    known, _ = knobs.parse_known_args(argv)
    settings = PluginSettings.from_env().merged(
        disable_autoload=known.disable_plugin_autoload,
        allow=[a for v in known.plugin_allow for a in v.split(",") if a],
        block=[b for v in known.plugin_block for b in v.split(",") if b],
    )
    system = PluginSystem(settings)
    system.load_entry_points()
    system.check_pending()
    system.collect_registrations()
    return system


def serve(argv: Sequence[str]) -> int:
    """``nereid serve``: run until SIGINT or SIGTERM; 0 after a graceful stop, 1 when the
    server fails to start, 2 for a command-line error."""
    plugins = _plugin_system(argv)
    parser = build_parser(plugins)
    options = parser.parse_args(argv)
    try:
        options = finish_options(options)
    except NereidError as exc:
        parser.error(exc.message)
    if not options.model_repository:
        parser.error("--model-repository must be specified")
    from .server import Server

    try:
        server = Server(options=options)
        server.log_settings.update(_log_flags(options))
        asyncio.run(server.serve_forever())
    except NereidError as exc:
        log.error("failed to start the server: %s", exc.message)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 0
    return 0


def _log_flags(options: argparse.Namespace) -> dict[str, object]:
    return {
        "log_file": options.log_file,
        "log_info": options.log_info,
        "log_warning": options.log_warning,
        "log_error": options.log_error,
        "log_verbose_level": options.log_verbose,
        "log_format": options.log_format,
    }


def plugins_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="nereid plugins")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_plugin_knobs(parser)
    args = parser.parse_args(argv)
    described = _plugin_system(argv).describe()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for plugin in described:
        print(f"{plugin['name']}  ({plugin['distribution']} {plugin['version']})")
        for kind, entries in plugin["registered"].items():
            names = ", ".join(e["name"] for e in entries)
            print(f"    {kind}: {names}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"serve": serve, "plugins": plugins_command}
    if not argv or argv[0] not in commands:
        print("usage: nereid {serve,plugins} [options]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
