"""Nereid's dynamic batcher: Triton's ``dynamic_batching`` as a scheduler plugin.

The entry-point module is :mod:`nereid_dynamic_batcher.plugin` (cheap to import). The
scheduler lives in :mod:`nereid_dynamic_batcher.scheduler`; the helpers a backend uses to
gather ragged inputs, read batch inputs and scatter batch outputs are in
:mod:`nereid_dynamic_batcher.ragged`.
"""

__version__ = "0.1.0"
