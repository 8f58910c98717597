"""Q/DQ quantization: placement rules and the rewriter, the policy, weight quantization and rounding (AdaRound), weight memory, the TensorRT lint, and the quantize stage."""
