"""``QDQPolicy``: every choice of the Q/DQ rewrite in one frozen dataclass (no string-keyed option dicts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from common.errors import UserError

TARGETS = ("tensorrt", "onnxruntime")
SHORTCUT_MODES = ("split", "shared", "float")

# Default exclusions, by node-name pattern (fnmatch), chosen by measurement on the reference model
# (docs/benchmarks.md, "Default exclusions and estimator": 16 seeds, DDIM 50, W8A8, max ranges): every layer
# quantized 19.95 dB; conv_in float 20.14 dB; conv_out float 26.27 dB; both float 27.81 dB (37.32 dB with the default
# MSE ranges). The first conv quantizes x_t itself, the last one's output is the predicted noise. NVIDIA Model
# Optimizer leaves the same two in float.
DEFAULT_EXCLUDE: tuple[str, ...] = ("*/conv_in/*", "*/conv_out/*")


@dataclass(frozen=True)
class QDQPolicy:
    """How ``insert_qdq`` quantizes a UNet.

    target: ``tensorrt`` follows TensorRT's placement (Q/DQ on inputs only); ``onnxruntime`` also quantizes the
        outputs of weighted ops so ONNX Runtime's CPU provider fuses DQ->Conv->Q into QLinearConv (real INT8).
    weight_bits: 8, or 4 (4-bit values, per-channel MSE-searched scales, stored in INT8 containers).
    shortcut: ``split`` (each skip-Concat branch of a shortcut conv gets its own scale: two convs summed),
        ``shared`` (one scale across the Concat: Model Optimizer's choice), ``float`` (shortcut conv unquantized).
    attention_matmul: also quantize the two activation MatMuls of attention (QK^T, softmax·V).
    residual_add: quantize the residual input of Add where TensorRT fuses the Add into the preceding Conv
        (``tensorrt`` target only: ONNX Runtime's CPU provider has no such fusion, the Q/DQ would only cost time).
    exclude: fnmatch patterns of node names to leave in float; keep_float: exact node names to leave in float
        (e.g. the most sensitive layers).
    """

    target: str = "tensorrt"
    weight_bits: int = 8
    shortcut: str = "split"
    attention_matmul: bool = False
    residual_add: bool = True
    exclude: tuple[str, ...] = field(default=DEFAULT_EXCLUDE)
    keep_float: tuple[str, ...] = ()
    activation_bits: int = 8

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise UserError(f"unknown --target '{self.target}'; known: {', '.join(TARGETS)}")
        if self.weight_bits not in (4, 8):
            raise UserError(f"--weight-bits must be 8 or 4, got {self.weight_bits}")
        if self.shortcut not in SHORTCUT_MODES:
            raise UserError(f"unknown --shortcut '{self.shortcut}'; known: {', '.join(SHORTCUT_MODES)}")
        if self.activation_bits != 8:
            raise UserError(f"activations are INT8 only, got {self.activation_bits} bits")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    @property
    def activation_dtype(self) -> type:
        """numpy dtype of quantized activations: int8 (TensorRT), uint8 with zero point 128 (ONNX Runtime CPU)."""
        return np.uint8 if self.target == "onnxruntime" else np.int8

    @property
    def activation_zero_point(self) -> int:
        """0 for int8; 128 for uint8, the same symmetric grid shifted (q_u8 = q_s8 + 128)."""
        return 128 if self.target == "onnxruntime" else 0

    @property
    def weight_qmax(self) -> int:
        """Largest weight code: 127 for 8 bits, 7 for 4 bits (symmetric, zero point 0)."""
        return 2 ** (self.weight_bits - 1) - 1

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["exclude"] = list(self.exclude)
        d["keep_float"] = list(self.keep_float)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QDQPolicy:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown QDQ policy field(s) {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
