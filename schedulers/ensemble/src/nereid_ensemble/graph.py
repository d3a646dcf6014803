"""An ensemble's pipeline: its steps, the named tensors between them, and Triton's load-time rules.

:func:`build_graph` reads ``ensemble_scheduling`` and checks what the configuration alone can
tell (every step complete, each tensor written once, no cycle, nothing consumed that is never
produced, every output written, nothing unused). :meth:`EnsembleGraph.bind` then checks the
graph against the configurations of the loaded step models: the names mapped exist, required
inputs are mapped, datatypes and shapes agree between producer and consumer, the ensemble's
``max_batch_size`` fits every step's, and responses of decoupled steps never meet responses of
another decoupled step (or the request's own tensors) at one step. Every failure is an
:class:`~nereid.InvalidArgumentError` naming the ensemble, the step and the tensor.

A :class:`Plan` is the part of the graph one request needs: Triton runs only the steps that
lead to the outputs a request asks for.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nereid import InvalidArgumentError, NereidError
from nereid.config import ModelConfig
from nereid.config.model_config_pb2 import DataType as ProtoDataType

ENSEMBLE_INPUT = -1  # the "producer" of an ensemble input


@dataclass(eq=False)
class Step:
    """One ``ensemble_scheduling.step``; ``bind`` fills in what the step model's config says."""

    index: int
    model_name: str
    model_version: int
    inputs: tuple[tuple[str, str], ...]  # (step model input, ensemble tensor), sorted
    outputs: tuple[tuple[str, str], ...]  # (step model output, ensemble tensor), sorted
    label: str = ""
    tensors: tuple[str, ...] = ()  # the distinct ensemble tensors it reads
    batching: bool = False
    decoupled: bool = False
    input_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)
    requested_outputs: tuple[str, ...] = ()  # empty: every output of the model is mapped


@dataclass(frozen=True)
class _Use:
    """A tensor as one producer or consumer sees it, for the consistency checks."""

    datatype: int
    dims: tuple[int, ...]
    batching: bool
    who: str

    @property
    def full_dims(self) -> tuple[int, ...]:
        return (-1, *self.dims) if self.batching else self.dims

    def describe(self) -> str:
        return f"{_type_name(self.datatype)} {_dims(self.full_dims)} as {self.who}"


@dataclass(eq=False)
class Plan:
    """What one request runs: the steps leading to the outputs it wants, in topological order,
    and how many times each tensor is read (by those steps, plus once by the response when it
    is a wanted output), so that a tensor is dropped as soon as its last reader has it."""

    wanted: tuple[str, ...]
    wanted_set: frozenset[str]
    steps: tuple[Step, ...]
    inputs: tuple[str, ...]  # the ensemble inputs those steps read
    consumers: dict[str, tuple[Step, ...]]
    refs: dict[str, int]


class EnsembleGraph:
    """The steps of an ensemble and the tensors between them (see the module docstring)."""

    def __init__(
        self,
        config: ModelConfig,
        steps: list[Step],
        producer: dict[str, int],
        consumers: dict[str, list[Step]],
        order: list[Step],
    ) -> None:
        self.config = config
        self.name = config.name
        self.batching = config.max_batch_size > 0
        self.inputs = tuple(t.name for t in config.input)
        self.outputs = tuple(t.name for t in config.output)
        self.output_dims = {
            t.name: tuple(t.reshape.shape) if t.HasField("reshape") else tuple(t.dims)
            for t in config.output
        }
        self.steps = steps
        self.producer = producer
        self.consumers = consumers
        self.order = order
        self.decoupled = False
        self._plans: dict[frozenset[str] | None, Plan] = {}

    def _error(self, message: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"ensemble '{self.name}': {message}")

    # -- checks against the step models ---------------------------------------------------------

    def bind(self, step_config: Callable[[Step], ModelConfig]) -> None:
        """Check the graph against each step model's configuration (``step_config(step)``,
        which raises a NereidError for a step model that is not available)."""
        config = self.config
        uses: dict[str, _Use] = {}

        def use(tensor: str, this: _Use) -> None:
            first = uses.setdefault(tensor, this)
            if first is this:
                return
            if first.datatype != this.datatype:
                raise self._error(
                    f"inconsistent datatype for tensor '{tensor}': it is "
                    f"{first.describe()} but {this.describe()}"
                )
            if not _dims_agree(first.dims, this.dims) and not _dims_agree(
                first.full_dims, this.full_dims
            ):
                raise self._error(
                    f"inconsistent shape for tensor '{tensor}': it is "
                    f"{first.describe()} but {this.describe()}"
                )

        for tensor in config.input:
            dims = tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims
            use(
                tensor.name,
                _Use(
                    tensor.data_type, tuple(dims), self.batching, f"ensemble input '{tensor.name}'"
                ),
            )
        for tensor in config.output:
            use(
                tensor.name,
                _Use(
                    tensor.data_type,
                    self.output_dims[tensor.name],
                    self.batching,
                    f"ensemble output '{tensor.name}'",
                ),
            )

        for step in self.steps:
            try:
                model = step_config(step)
            except NereidError as exc:
                raise self._error(f"{step.label} is not available: {exc.message}") from None
            batching = model.max_batch_size > 0
            if batching and model.max_batch_size < config.max_batch_size:
                raise self._error(
                    f"the ensemble allows max_batch_size {config.max_batch_size}, but "
                    f"{step.label} allows only {model.max_batch_size}"
                )
            step.batching = batching
            step.decoupled = model.model_transaction_policy.decoupled
            model_inputs = {t.name: t for t in model.input}
            model_outputs = {t.name: t for t in model.output}
            for name, tensor in step.inputs:
                spec = model_inputs.get(name)
                if spec is None:
                    raise self._error(
                        f"{step.label} maps tensor '{tensor}' to input '{name}', which model "
                        f"'{step.model_name}' does not have (its inputs: "
                        f"{_names(model_inputs)})"
                    )
                use(
                    tensor,
                    _Use(
                        spec.data_type,
                        tuple(spec.dims),
                        batching,
                        f"input '{name}' of {step.label}",
                    ),
                )
                step.input_dims[name] = tuple(spec.dims)
            mapped = {name for name, _ in step.inputs}
            for spec in model.input:
                if spec.name not in mapped and not spec.optional:
                    raise self._error(
                        f"input '{spec.name}' of {step.label} is not mapped to any ensemble "
                        "tensor (add it to the step's input_map)"
                    )
            for name, tensor in step.outputs:
                spec = model_outputs.get(name)
                if spec is None:
                    raise self._error(
                        f"{step.label} maps output '{name}' to tensor '{tensor}', but model "
                        f"'{step.model_name}' has no output '{name}' (its outputs: "
                        f"{_names(model_outputs)})"
                    )
                use(
                    tensor,
                    _Use(
                        spec.data_type,
                        tuple(spec.dims),
                        batching,
                        f"output '{name}' of {step.label}",
                    ),
                )
            wanted = sorted(name for name, _ in step.outputs)
            step.requested_outputs = () if len(wanted) == len(model_outputs) else tuple(wanted)
        self._check_decoupled()

    def _check_decoupled(self) -> None:
        """Each response of a decoupled step runs the steps after it once; a step whose inputs
        come from two different decoupled steps (or from one and from the request) could not
        pair them up, so Triton refuses it, and so do we."""
        origin: dict[str, int] = dict.fromkeys(self.inputs, ENSEMBLE_INPUT)

        def describe(source: int) -> str:
            return "the request" if source == ENSEMBLE_INPUT else self.steps[source].label

        for step in self.order:
            sources = {origin[tensor] for _, tensor in step.inputs}
            if len(sources) > 1:
                raise self._error(
                    f"{step.label} receives inputs that originate from different decoupled "
                    f"sources ({', '.join(sorted(describe(s) for s in sources))}); "
                    "the responses of a decoupled step can only meet tensors derived from "
                    "those same responses"
                )
            source = step.index if step.decoupled else sources.pop()
            for _, tensor in step.outputs:
                origin[tensor] = source
        sources = {origin[name] for name in self.outputs}
        if len(sources) > 1:
            raise self._error(
                "the ensemble outputs originate from different decoupled sources ("
                + ", ".join(sorted(describe(s) for s in sources))
                + ")"
            )
        self.decoupled = any(step.decoupled for step in self.steps)

    # -- per-request plans --------------------------------------------------------------------

    def plan(self, requested: Iterable[str] = ()) -> Plan:
        """The plan for a request asking for ``requested`` outputs (all when empty)."""
        wanted = frozenset(requested) or None
        if wanted is not None and len(wanted) == len(self.outputs):
            wanted = None
        plan = self._plans.get(wanted)
        if plan is None:
            plan = self._plans[wanted] = self._make_plan(wanted)
        return plan

    def _make_plan(self, wanted: frozenset[str] | None) -> Plan:
        outputs = tuple(n for n in self.outputs if wanted is None or n in wanted)
        needed: set[int] = set()
        frontier = list(outputs)
        while frontier:
            index = self.producer.get(frontier.pop(), ENSEMBLE_INPUT)
            if index != ENSEMBLE_INPUT and index not in needed:
                needed.add(index)
                frontier.extend(tensor for _, tensor in self.steps[index].inputs)
        steps = tuple(s for s in self.order if s.index in needed)
        consumers: dict[str, list[Step]] = {}
        refs: dict[str, int] = dict.fromkeys(outputs, 1)
        for step in steps:
            for tensor in dict.fromkeys(tensor for _, tensor in step.inputs):
                consumers.setdefault(tensor, []).append(step)
            for _, tensor in step.inputs:
                refs[tensor] = refs.get(tensor, 0) + 1
        return Plan(
            wanted=outputs,
            wanted_set=frozenset(outputs),
            steps=steps,
            inputs=tuple(n for n in self.inputs if n in refs),
            consumers={tensor: tuple(s) for tensor, s in consumers.items()},
            refs=refs,
        )


def build_graph(config: ModelConfig) -> EnsembleGraph:
    """Parse and check ``ensemble_scheduling`` on its own (see the module docstring)."""
    name = config.name

    def error(message: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"ensemble '{name}': {message}")

    if config.instance_group:
        raise error("instance_group must not be set for an ensemble (it has no instances)")
    if config.model_warmup:
        raise error("model_warmup must not be set for an ensemble")
    scheduling = config.ensemble_scheduling
    if not scheduling.step:
        raise error("ensemble_scheduling must list at least one step")
    counts: dict[str, int] = {}
    for step in scheduling.step:
        counts[step.model_name] = counts.get(step.model_name, 0) + 1
    steps: list[Step] = []
    for index, spec in enumerate(scheduling.step):
        if not spec.model_name:
            raise error(f"step {index} must specify 'model_name'")
        label = (
            f"step '{spec.model_name}'"
            if counts[spec.model_name] == 1
            else f"step {index} ('{spec.model_name}')"
        )
        if not spec.input_map:
            raise error(f"{label} must specify 'input_map'")
        if not spec.output_map:
            raise error(f"{label} must specify 'output_map'")
        steps.append(
            Step(
                index=index,
                model_name=spec.model_name,
                model_version=spec.model_version or -1,
                inputs=tuple(sorted(spec.input_map.items())),
                outputs=tuple(sorted(spec.output_map.items())),
                label=label,
                tensors=tuple(sorted(set(spec.input_map.values()))),
            )
        )

    inputs = [t.name for t in config.input]
    outputs = [t.name for t in config.output]
    producer: dict[str, int] = dict.fromkeys(inputs, ENSEMBLE_INPUT)
    for step in steps:
        for output, tensor in step.outputs:
            other = producer.get(tensor)
            if other == ENSEMBLE_INPUT:
                raise error(
                    f"{step.label} writes output '{output}' to tensor '{tensor}', which is an "
                    "ensemble input"
                )
            if other is not None:
                raise error(
                    f"tensor '{tensor}' is written by both {steps[other].label} and "
                    f"{step.label}; a tensor can appear in an output_map only once"
                )
            producer[tensor] = step.index
    consumers: dict[str, list[Step]] = {}
    for step in steps:
        for model_input, tensor in step.inputs:
            if tensor not in producer:
                raise error(
                    f"tensor '{tensor}' (input '{model_input}' of {step.label}) is never "
                    "produced: it is neither an ensemble input nor in any step's output_map"
                )
            readers = consumers.setdefault(tensor, [])
            if step not in readers:
                readers.append(step)

    order = _topological_order(steps, producer, error)
    for tensor in outputs:
        if tensor not in producer:
            raise error(f"ensemble output '{tensor}' is not written by any step")
        if producer[tensor] == ENSEMBLE_INPUT:
            raise error(f"ensemble output '{tensor}' is also an ensemble input")
    for tensor in inputs:
        if tensor not in consumers:
            raise error(f"ensemble input '{tensor}' is not used by any step")
    for tensor, index in producer.items():
        if index != ENSEMBLE_INPUT and tensor not in consumers and tensor not in outputs:
            raise error(
                f"tensor '{tensor}' written by {steps[index].label} is unused: no step reads "
                "it and it is not an ensemble output"
            )
    return EnsembleGraph(config, steps, producer, consumers, order)


def _topological_order(
    steps: list[Step], producer: dict[str, int], error: Callable[[str], Exception]
) -> list[Step]:
    """The steps in an order where each comes after those it reads from; a cycle is an error
    naming the steps and tensors on it (its steps would wait for each other forever)."""
    after: dict[int, set[int]] = {s.index: set() for s in steps}  # step -> steps it reads from
    for step in steps:
        for _, tensor in step.inputs:
            source = producer[tensor]
            if source != ENSEMBLE_INPUT:
                after[step.index].add(source)
    order: list[Step] = []
    done: set[int] = set()
    left = list(steps)
    while left:
        ready = [s for s in left if after[s.index] <= done]
        if not ready:
            raise error(_describe_cycle(left, producer, after))
        for step in ready:
            order.append(step)
            done.add(step.index)
        left = [s for s in left if s.index not in done]
    return order


def _describe_cycle(left: list[Step], producer: dict[str, int], after: dict[int, set[int]]) -> str:
    by_index = {s.index: s for s in left}
    # Walk backwards from any blocked step along blocked sources until a step repeats.
    path = [left[0].index]
    while True:
        source = min(i for i in after[path[-1]] if i in by_index)
        if source in path:
            cycle = [*path[path.index(source) :], source]
            break
        path.append(source)
    cycle.reverse()  # now in data-flow order: each step feeds the next

    def link(a: int, b: int) -> str:
        tensors = sorted(t for _, t in by_index[b].inputs if producer[t] == a)
        return f" -[{', '.join(tensors)}]-> "

    text = by_index[cycle[0]].label
    for a, b in itertools.pairwise(cycle):
        text += link(a, b) + by_index[b].label
    return (
        f"the steps form a cycle: {text}; a step runs once all its inputs exist, so these never run"
    )


def _dims_agree(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _dims(dims: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _type_name(datatype: int) -> str:
    name = ProtoDataType.Name(datatype)
    return "BYTES" if name == "TYPE_STRING" else name.removeprefix("TYPE_")


def _names(specs: dict) -> str:
    return ", ".join(sorted(specs)) or "none"
