"""Entry-point module: registers the ``sequence`` scheduler by a lazy target (imports nothing
but the hook marker)."""

from __future__ import annotations

from nereid import hookimpl


@hookimpl
def register_schedulers(registry) -> None:
    registry.add("sequence", "nereid_sequence_batcher.scheduler:SequenceBatcher")
