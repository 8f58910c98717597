"""Serving the work folder\x27s pipeline on Triton Inference Server (PyTriton): models, server, client."""
