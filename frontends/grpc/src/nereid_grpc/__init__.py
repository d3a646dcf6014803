"""Nereid's gRPC frontend: Triton's ``inference.GRPCInferenceService`` served with ``grpc.aio``.

Importing this package is cheap: grpc is imported only when the frontend is created
(:func:`nereid_grpc.frontend.create_frontend`).
"""

__all__: list[str] = []
