"""``QDQPolicy``: every choice of the Q/DQ rewrite in one frozen dataclass (no string-keyed option dicts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from common.errors import UserError
from pipelines.families.ddpm import UNET_KEEP_FLOAT

TARGETS = ("tensorrt", "onnxruntime")
SHORTCUT_MODES = ("split", "shared", "float")
WEIGHT_ROUNDINGS = ("nearest", "mse", "adaround")
INT4_SCOPES = ("linear", "all")
# Blocked INT4 block sizes TensorRT builds (its INT4 weight-only quantization documents 64 and 128); ONNX Runtime's
# MatMulNBits takes any power of two >= 16. Default per target: 64 for tensorrt, 32 for onnxruntime.
TENSORRT_INT4_BLOCK_SIZES = (64, 128)
DEFAULT_INT4_BLOCK_SIZE = {"tensorrt": 64, "onnxruntime": 32}
# Largest weight code with reduce_range: ONNX Runtime's quant_utils.get_qmin_qmax_for_qType gives INT8 (-64, 64).
REDUCED_RANGE_QMAX = 64
# reduce_range modes: "all" (every 8-bit weight in [-64, 64]); "pairs" (convolutions keep 8 bits with per-channel
# scales coarse enough that codes of input channels 2k and 2k+1 at each kernel tap sum to at most 128 in magnitude;
# MatMul/Gemm weights in [-64, 64]).
REDUCE_RANGE_MODES = ("all", "pairs")

# Default exclusions of a policy built in code: the UNet families' float-kept layers (``quantize`` takes the work
# folder's family's, pipelines/families/). Chosen by measurement on the reference model (docs/benchmarks.md,
# "Default exclusions and estimator": 16 seeds, DDIM 50, W8A8, max ranges): every layer quantized 19.95 dB; conv_in
# float 20.14 dB; conv_out float 26.27 dB; both float 27.81 dB (37.32 dB with the default MSE ranges). The first conv
# quantizes x_t itself, the last one's output is the predicted noise. NVIDIA Model Optimizer leaves the same two in
# float.
DEFAULT_EXCLUDE: tuple[str, ...] = UNET_KEEP_FLOAT


@dataclass(frozen=True)
class QDQPolicy:
    """How ``insert_qdq`` quantizes a UNet.

    target: ``tensorrt`` follows TensorRT's placement (Q/DQ on inputs only); ``onnxruntime`` also quantizes the
        outputs of weighted ops so ONNX Runtime's CPU provider fuses DQ->Conv->Q into QLinearConv (real INT8).
    weight_bits: 8, or 4: MatMul/Gemm weights become blocked INT4 (``int4_block_size`` values along the reduction
        axis per scale; opset 21; weight-only, their activations stay float: ONNX Runtime's MatMulNBits and
        TensorRT's INT4 weight-only GEMM); convolutions get 4-bit values in INT8 containers (``int4_scope`` "all",
        an accuracy mode: no INT4 convolution kernel exists) or stay INT8 (``int4_scope`` "linear").
    weight_rounding: ``nearest`` (scales amax/qmax, round to nearest), ``mse`` (per-channel MSE-searched scales,
        round to nearest), ``adaround`` (MSE scales, rounding learned per layer on calibration inputs; the codes come
        from ``quantization.weight_rounding``). Default: nearest for 8 bits, mse for 4 bits. INT4 blocks always take
        amax scales (``quantization.weight_quant.BLOCK_SCALE_METHOD``: measured better).
    shortcut: ``split`` (each skip-Concat branch of a shortcut conv gets its own scale: two convs summed),
        ``shared`` (one scale across the Concat: Model Optimizer's choice), ``float`` (shortcut conv unquantized).
    attention_matmul: also quantize the two activation MatMuls of attention (QK^T, softmax·V).
    residual_add: quantize the residual input of Add where TensorRT fuses the Add into the preceding Conv
        (``tensorrt`` target only: ONNX Runtime's CPU provider has no such fusion, the Q/DQ would only cost time).
    exclude: fnmatch patterns of node names to leave in float; keep_float: exact node names to leave in float
        (e.g. the most sensitive layers).
    reduce_range: "" (full range), ``all`` or ``pairs``. On x86 CPUs without VNNI (AVX2 ``vpmaddubsw``) a u8
        activation times an s8 weight, summed in pairs, saturates int16 with full-range weights (255·127·2 > 32767).
        ``all``: every 8-bit weight uses 7 bits of range, codes in [-64, 64] (ONNX Runtime's ``reduce_range``;
        255·64·2 = 32640 cannot saturate). ``pairs``: convolutions keep 8-bit codes on per-channel scales raised
        until the codes of input channels 2k and 2k+1 at every kernel tap (the pairs oneDNN's AVX2 kernels add) sum
        to at most 128 in magnitude (255·128 = 32640), costing far less precision than halving every range;
        MatMul/Gemm weights as ``all`` (OpenVINO's AVX2 matrix-product kernels pair other elements; measured in
        docs/cpu-backends.md). OpenVINO has no other way around saturation on such CPUs; VNNI/AMX CPUs and GPUs do
        not need it. Old records' ``true``/``false`` load as ``all``/"".
    smoothquant: SmoothQuant's alpha for the inputs of the quantized MatMul/Gemm layers, 0 for none
        (quantization/smoothquant.py; ``quantize`` then needs the calibration samples; INT8 weights only).
    """

    target: str = "tensorrt"
    weight_bits: int = 8
    shortcut: str = "split"
    attention_matmul: bool = False
    residual_add: bool = True
    exclude: tuple[str, ...] = field(default=DEFAULT_EXCLUDE)
    keep_float: tuple[str, ...] = ()
    activation_bits: int = 8
    weight_rounding: str = ""
    int4_scope: str = "all"
    int4_block_size: int = 0  # 0: the target's default (DEFAULT_INT4_BLOCK_SIZE)
    reduce_range: str = ""
    smoothquant: float = 0.0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise UserError(f"unknown --target '{self.target}'; known: {', '.join(TARGETS)}")
        if self.weight_bits not in (4, 8):
            raise UserError(f"--weight-bits must be 8 or 4, got {self.weight_bits}")
        if self.shortcut not in SHORTCUT_MODES:
            raise UserError(f"unknown --shortcut '{self.shortcut}'; known: {', '.join(SHORTCUT_MODES)}")
        if not self.weight_rounding:
            object.__setattr__(self, "weight_rounding", "nearest" if self.weight_bits == 8 else "mse")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise UserError(f"unknown --weight-rounding '{self.weight_rounding}'; known: {', '.join(WEIGHT_ROUNDINGS)}")
        if self.int4_scope not in INT4_SCOPES:
            raise UserError(f"unknown --int4-scope '{self.int4_scope}'; known: {', '.join(INT4_SCOPES)}")
        if not self.int4_block_size:
            object.__setattr__(self, "int4_block_size", DEFAULT_INT4_BLOCK_SIZE[self.target])
        bs = self.int4_block_size
        if bs < 16 or bs & (bs - 1):
            raise UserError(f"--int4-block-size must be a power of two >= 16 (ONNX Runtime's MatMulNBits), got {bs}")

        if isinstance(self.reduce_range, bool):  # records written before the modes: true meant "all"
            object.__setattr__(self, "reduce_range", "all" if self.reduce_range else "")
        if self.reduce_range and self.reduce_range not in REDUCE_RANGE_MODES:
            raise UserError(f"unknown --reduce-range '{self.reduce_range}'; known: {', '.join(REDUCE_RANGE_MODES)}")
        if not 0.0 <= self.smoothquant <= 1.0:
            raise UserError(f"--smoothquant alpha must be in [0, 1] (0: off), got {self.smoothquant}")
        if self.smoothquant and self.weight_bits != 8:
            raise UserError("--smoothquant smooths INT8 linear layers (as ModelOpt does); it needs --weight-bits 8")
        if self.activation_bits != 8:
            raise UserError(f"activations are INT8 only, got {self.activation_bits} bits")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    def check_buildable(self) -> None:
        """UserError when the target cannot build what this policy writes: blocked INT4 for ``tensorrt`` takes block
        sizes 64 and 128 only. Checked by ``quantize`` (not on load: old records keep loading)."""
        bs = self.int4_block_size
        if self.target == "tensorrt" and self.weight_bits == 4 and bs not in TENSORRT_INT4_BLOCK_SIZES:
            raise UserError(f"--int4-block-size {bs}: TensorRT builds blocked INT4 with block sizes "
                            f"{' and '.join(map(str, TENSORRT_INT4_BLOCK_SIZES))} only; use --int4-block-size 64 or "
                            "128 with --target tensorrt (--target onnxruntime takes any power of two >= 16)")

    @property
    def activation_dtype(self) -> type:
        """numpy dtype of quantized activations: int8 (TensorRT), uint8 with zero point 128 (ONNX Runtime CPU)."""
        return np.uint8 if self.target == "onnxruntime" else np.int8

    @property
    def activation_zero_point(self) -> int:
        """0 for int8; 128 for uint8, the same symmetric grid shifted (q_u8 = q_s8 + 128)."""
        return 128 if self.target == "onnxruntime" else 0

    def weight_qmax(self, op: str) -> int:
        """Largest code of ``op``'s weight stored in an INT8 container (convolutions; linear layers that cannot be
        blocked): 7 for 4-bit values (``int4_scope`` all); 64 with ``reduce_range`` all, and for MatMul/Gemm with
        ``pairs``; else 127."""
        if self.weight_bits == 4 and self.int4_scope == "all":
            return 7
        if self.reduce_range == "all" or (self.reduce_range == "pairs" and op != "Conv"):
            return REDUCED_RANGE_QMAX
        return 127

    def pair_safe(self, op: str) -> bool:
        """``op``'s 8-bit weight scales are raised so input-channel pairs of codes sum to at most 128 in magnitude
        (``reduce_range`` pairs, convolutions)."""
        return self.reduce_range == "pairs" and op == "Conv" and self.weight_qmax(op) == 127

    @property
    def blocked_int4(self) -> bool:
        """MatMul/Gemm weights become blocked INT4 (weight-only)."""
        return self.weight_bits == 4

    @property
    def scale_method(self) -> str:
        """How weight scales are chosen: ``max`` (amax/qmax) for nearest rounding, else ``mse``."""
        return "max" if self.weight_rounding == "nearest" else "mse"

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
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})  # type: ignore[arg-type]
