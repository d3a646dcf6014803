"""Documentation that must keep up with the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from nereid import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"


def hook_names() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "nereid_spec")
    ]


def test_every_hook_has_a_section_and_a_docstring():
    text = (DOCS / "plugin_hooks.md").read_text()
    sections = set(re.findall(r"^## (\w+)$", text, re.MULTILINE))
    names = hook_names()
    assert len(names) >= 12
    assert set(names) <= sections, f"undocumented hooks: {set(names) - sections}"
    assert sections <= set(names), f"documented hooks that do not exist: {sections - set(names)}"
    for name in names:
        assert getattr(hookspecs, name).__doc__, f"hook {name} has no docstring"
