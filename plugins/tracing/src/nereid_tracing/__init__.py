"""Nereid request tracing: Triton's trace files and OpenTelemetry spans.

Installed as a request observer when any ``--trace-config`` (or deprecated ``--trace-*``) flag
is given; serves Triton's trace extension (``/v2[/models/<m>]/trace/setting``, gRPC
``TraceSetting``) through ``api.tracer``. This module imports nothing heavy; the OpenTelemetry
SDK is imported only in ``mode=opentelemetry``.
"""

from __future__ import annotations

__version__ = "0.1.0"
