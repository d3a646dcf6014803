"""Generated protobuf modules for the Triton-compatible gRPC protocol."""
