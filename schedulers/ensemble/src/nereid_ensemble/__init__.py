"""Nereid's ensemble scheduler: Triton's ensemble models as a scheduler plugin.

The entry-point module is :mod:`nereid_ensemble.plugin` (cheap to import). The pipeline graph
and its load-time validation are in :mod:`nereid_ensemble.graph`; the scheduler that runs a
request through the steps is :class:`nereid_ensemble.scheduler.EnsembleScheduler`.
"""

__version__ = "0.1.0"
