"""Nereid's sequence batcher: Triton's ``sequence_batching`` as a scheduler plugin.

The entry-point module is :mod:`nereid_sequence_batcher.plugin` (cheap to import). The
scheduler lives in :mod:`nereid_sequence_batcher.scheduler`; the control tensors it fills in
are described by :mod:`nereid_sequence_batcher.controls`, implicit state by
:mod:`nereid_sequence_batcher.state`.
"""

__version__ = "0.1.0"
