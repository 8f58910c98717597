"""Inference backends (ONNX Runtime, TensorRT) behind one Session protocol, and the denoising runner."""
