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
    plugins = _plugin_system(argv)
    parser = build_parser(plugins)
    options = finish_options(parser.parse_args(argv))
    if not options.model_repository:
        parser.error("--model-repository is required")
    from .server import Server

    server = Server(options=options)
    try:
        asyncio.run(server.serve_forever())
    except NereidError as exc:
        log.error("%s", exc.message)
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


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
