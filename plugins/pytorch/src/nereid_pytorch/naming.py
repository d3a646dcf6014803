"""Triton's pytorch-backend rules for matching configuration tensors to a model's arguments and
results (no torch import).

Inputs, in this order of preference:

1. a ``forward`` taking one ``Dict[str, Tensor]`` argument gets every input in that dictionary,
   keyed by its configuration name;
2. when every input name is the name of a ``forward`` argument, inputs go to those arguments;
3. when every input name is ``<anything>__<index>`` (``INPUT__0``), ``index`` is the position;
4. otherwise the configuration's order is the position.

Outputs: a model returns a tensor, or a tuple or list of tensors. When every output name is
``<anything>__<index>`` the index picks the result; otherwise the configuration's order does.
Sequence-batching state tensors (``input_name``/``output_name``) count as inputs and outputs
after the configuration's own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_INDEXED = re.compile(r"^.+__(\d+)$")


def _indices(names: Sequence[str]) -> list[int] | None:
    found = [_INDEXED.match(name) for name in names]
    if not names or not all(found):
        return None
    indices = [int(m.group(1)) for m in found if m]
    if len(set(indices)) != len(indices):
        return None
    return indices


@dataclass(frozen=True)
class InputPlan:
    """How to call the model: ``dict`` (one dictionary argument) or ``positional`` (``order``
    lists the input name for each argument position, ``None`` where none is given)."""

    mode: str
    order: tuple[str | None, ...]
    rule: str


def plan_inputs(
    names: Sequence[str],
    arguments: Sequence[str] | None,
    required: int | None = None,
    dict_input: bool = False,
) -> InputPlan:
    """``names``: configuration inputs; ``arguments``: the forward's argument names (without
    ``self``) when known; ``required``: how many of them have no default. Raises ValueError."""
    names = list(names)
    if dict_input:
        return InputPlan("dict", tuple(names), "a Dict[str, Tensor] argument")
    if arguments is not None and names and all(n in arguments for n in names):
        positions = {n: arguments.index(n) for n in names}
        rule = "forward argument names"
    elif (indices := _indices(names)) is not None:
        positions = dict(zip(names, indices, strict=True))
        rule = "<name>__<index>"
    else:
        positions = {n: i for i, n in enumerate(names)}
        rule = "configuration order"
    size = max(positions.values(), default=-1) + 1
    if arguments is not None and size > len(arguments):
        raise ValueError(
            f"the model's forward takes {len(arguments)} input(s) "
            f"({', '.join(arguments) or 'none'}) but the inputs {names} map to {size} "
            f"positions (by {rule})"
        )
    order: list[str | None] = [None] * size
    for name, position in positions.items():
        order[position] = name
    needed = required if required is not None else (len(arguments) if arguments else size)
    missing = [
        (arguments[i] if arguments and i < len(arguments) else f"#{i}")
        for i in range(max(needed, size))
        if i >= size or order[i] is None
    ]
    if missing:
        raise ValueError(
            f"no configuration input for the model's argument(s) {missing} (inputs {names} "
            f"matched by {rule})"
        )
    return InputPlan("positional", tuple(order), rule)


def plan_outputs(names: Sequence[str]) -> list[tuple[str, int]]:
    """Each output name with the index of the model result it takes."""
    indices = _indices(names)
    if indices is None:
        indices = list(range(len(names)))
    return list(zip(names, indices, strict=True))
