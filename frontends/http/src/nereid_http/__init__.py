"""Nereid's HTTP/REST frontend: KServe v2 with Triton's extensions, served by aiohttp.

This package is cheap to import: the entry-point module (:mod:`nereid_http.plugin`) only adds
flags and registers the frontend; aiohttp is imported when the frontend is created.
"""

__all__: list[str] = []
