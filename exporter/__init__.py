"""PyTorch diffusers UNet -> ONNX export, and ONNX graph rewrites."""
