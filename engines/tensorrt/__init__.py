"""The TensorRT backend: engine build and metadata, sessions, graph rewrites for TensorRT, component and group engines."""
