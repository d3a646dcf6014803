"""Triton's ``triton_python_backend_utils`` (``import triton_python_backend_utils as pb_utils``).

A thin alias: the implementation is :mod:`nereid_python.pb_utils`.
"""

from nereid_python.pb_utils import *  # noqa: F403
from nereid_python.pb_utils import __all__  # noqa: F401
