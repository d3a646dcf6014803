"""Nereid's Python backend: serves Triton Python-backend ``model.py`` files unchanged.

Modules:

- :mod:`nereid_python.plugin` -- the entry point (registers the ``python`` backend lazily).
- :mod:`nereid_python.pb_utils` -- the ``triton_python_backend_utils`` object model, which knows
  nothing of where the model runs.
- :mod:`nereid_python.runtime` -- the services pb_utils objects call (metrics, logging), set by
  whoever hosts the model.
- :mod:`nereid_python.runner` -- drives one ``TritonPythonModel`` (initialize, execute, finalize)
  on pb_utils objects only.
- :mod:`nereid_python.host` -- instance hosts: where a runner lives. ``ThreadHost`` runs it in
  the server process on the instance thread.
- :mod:`nereid_python.process` -- ``ProcessHost``: the runner in a process of its own (the
  default), restarted when it dies; :mod:`nereid_python.worker` is that process's side,
  :mod:`nereid_python.protocol` the messages, :mod:`nereid_python.shm` the shared-memory arenas.
- :mod:`nereid_python.backend` -- the kernel's Backend / Model / ModelInstance contract.
"""

__version__ = "0.1.0"
