"""``--http-restricted-api``: API groups that answer only requests carrying a given header."""

from __future__ import annotations

from collections.abc import Iterable

from nereid.errors import InvalidArgumentError

API_GROUPS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)


def parse_restricted_apis(values: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``<api-group>[,<api-group>...]:<key>=<value>`` flags as {group: (header, value)}.

    A group restricted twice, an unknown group or a malformed flag is an INVALID_ARG error.
    """
    restrictions: dict[str, tuple[str, str]] = {}
    for value in values:
        groups, sep, rule = value.partition(":")
        key, eq, expected = rule.partition("=")
        if not sep or not eq or not groups.strip() or not key.strip():
            raise InvalidArgumentError(
                f"--http-restricted-api option format is "
                f"'<API_1>,<API_2>:<restricted-key>=<restricted-value>', got '{value}'"
            )
        for group in (g.strip() for g in groups.split(",")):
            if group not in API_GROUPS:
                raise InvalidArgumentError(
                    f"unknown restricted API '{group}' in --http-restricted-api, expect one of "
                    f"{', '.join(API_GROUPS)}"
                )
            if group in restrictions:
                raise InvalidArgumentError(
                    f"restricted API '{group}' is given more than once in --http-restricted-api"
                )
            restrictions[group] = (key.strip(), expected)
    return restrictions


__all__ = ["API_GROUPS", "parse_restricted_apis"]
