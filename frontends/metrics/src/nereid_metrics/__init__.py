"""nereid-metrics: Triton's Prometheus metrics for Nereid, served on ``--metrics-port``.

Importing this package imports neither aiohttp nor prometheus_client; they are imported when
the server creates the ``metrics`` frontend.
"""

__version__ = "0.1.0"
