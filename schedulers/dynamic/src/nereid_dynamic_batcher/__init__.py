"""Nereid's dynamic batcher: Triton's ``dynamic_batching`` as a scheduler plugin.

The entry-point module is :mod:`nereid_dynamic_batcher.plugin` (cheap to import). The
scheduler lives in :mod:`nereid_dynamic_batcher.scheduler`; the helpers a backend uses to
gather ragged inputs, read batch inputs and scatter batch outputs are in
:mod:`nereid_dynamic_batcher.ragged`.
"""

__version__ = "0.1.0"

FAIR_SHARE_PARAMETER = "nereid.dynamic_batching.fair_share"
# The model-config line that turns the fair share off: Triton's batch formation rule, exactly.
TRITON_RULE = f'parameters {{ key: "{FAIR_SHARE_PARAMETER}" value: {{ string_value: "false" }} }}'
