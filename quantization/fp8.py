"""FP8 E4M3 (ONNX FLOAT8E4M3FN) quantization: the value grid, weight codes and the graph settings FP8 Q/DQ needs.

TensorRT's FP8 scheme ("Quantization Schemes" in its developer guide): ``x_q = castToFp8(clip(x / s, -448, 448))``
(round to nearest, ties to even), ``x = x_q · s``; zero point 0. ONNX's QuantizeLinear with a FLOAT8E4M3FN zero
point (opset >= 19, ``saturate=1`` by default) computes the same, so one standard graph runs in ONNX Runtime (which
dequantizes and computes in float: an accuracy check, not FP8 speed) and in TensorRT.
"""

from __future__ import annotations

from dataclasses import replace

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper

from calibrators.ranges import TensorRanges
from quantization.qdq_policy import FP8_E4M3_MAX
from quantization.weight_quant import channel_amax

FP8_OPSET = 19  # the first opset with FLOAT8 types in QuantizeLinear/DequantizeLinear
FP8_IR_VERSION = 9  # the first IR version with FLOAT8 tensors
FP8_ONNX_TYPE = onnx.TensorProto.FLOAT8E4M3FN
#: TensorRT fuses FP8 attention (MHA) only for head sizes that are multiples of 16 (see docs/tensorrt.md).
FP8_HEAD_DIM_MULTIPLE = 16
#: Where FP8 activation amaxes come from: ``max`` (default: the largest |x| calibration saw, from ranges.json's
#: per-step abs-max, whatever estimator the file was made with) or ``ranges`` (the file's own estimator). Measured in
#: docs/benchmarks.md ("FP8 against INT8", reference model, 64 seeds, DDIM 50): the four estimators land within 1 dB
#: (pooled 28.6-29.6 dB, median image 30.9-32.0 dB, none best on both); max is kept: ModelOpt's FP8 choice, and it
#: needs no INT8-grid estimate (E4M3's spacing is relative: clipping buys little precision).
FP8_AMAX_SOURCES = ("max", "ranges")
FP8_DEFAULT_AMAX = "max"
FP8_MAX_SCALES = "global: max |x| per tensor over every calibration step (FP8 default)"


def max_ranges(ranges: TensorRanges) -> TensorRanges:
    """``ranges`` with every amax that has a per-step summary replaced by the largest |x| over all steps (the
    ``max`` estimator), and each step group's amax by the largest |x| over that group's steps."""
    amax = dict(ranges.amax)
    group_amax = {k: list(v) for k, v in ranges.group_amax.items()}
    for name, summary in ranges.step_summary.items():
        if name not in amax or not summary.absmax or max(summary.absmax) <= 0:
            continue
        amax[name] = max(summary.absmax)
        if name in group_amax:
            for g, (first, last) in enumerate(ranges.group_bounds):
                seen = [a for t, a in zip(summary.steps, summary.absmax, strict=True) if first <= t <= last and a > 0]
                if seen:
                    group_amax[name][g] = max(seen)
    return replace(ranges, amax=amax, group_amax=group_amax)


def to_e4m3(x: np.ndarray) -> np.ndarray:
    """``x`` (already divided by its scale) saturated to ±448 and rounded to the nearest E4M3 value (ties to even),
    as ml_dtypes.float8_e4m3fn (NaN stays NaN)."""
    return np.clip(np.asarray(x, dtype=np.float32), -FP8_E4M3_MAX, FP8_E4M3_MAX).astype(ml_dtypes.float8_e4m3fn)


def fake_quantize(x: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """The reference of an FP8 Q -> DQ pair: ``to_e4m3(x / scale) · scale`` in float32 (``scale`` broadcasts)."""
    s = np.asarray(scale, dtype=np.float32)
    return (to_e4m3(np.asarray(x, dtype=np.float32) / s).astype(np.float32) * s).astype(np.float32)


def fp8_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel FP8 weight: (values, scales). scales: float32 amax/448 per channel along ``axis`` (an all-zero
    channel gets a tiny positive scale); values: float32 holding E4M3 values exactly (stored as FLOAT8E4M3FN by
    ``retype_fp8``), shape of ``w``."""
    amax = channel_amax(w, axis)
    scale = (np.where(amax > 0, amax, np.float32(1e-8)) / FP8_E4M3_MAX).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    values = to_e4m3(w.astype(np.float32) / scale.reshape(shape)).astype(np.float32)
    return values, scale


def retype_fp8(graph: onnx.GraphProto, names: set[str]) -> None:
    """Re-store the initializers ``names`` (float32 or int8 placeholders holding E4M3 values or zeros) as
    FLOAT8E4M3FN: onnx-graphsurgeon cannot hold FLOAT8 constants."""
    for i, init in enumerate(graph.initializer):
        if init.name in names:
            values = numpy_helper.to_array(init).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(values, init.name))


def symbolic_shapes(model: onnx.ModelProto, names: set[str]) -> dict[str, tuple[object, ...]]:
    """Shapes of the tensors ``names`` by ONNX Runtime's symbolic shape inference, which follows the Shape -> Gather
    -> Reshape chains of exported attention that ONNX's own inference leaves as unknown dims (the head_dim of a
    diffusers UNet's attention, e.g.). Large initializers are left out (``skeleton``); a failure gives {}."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from exporter.shape_info import skeleton

    try:
        inferred = SymbolicShapeInference.infer_shapes(skeleton(model), auto_merge=True)
    except Exception:  # its own assertion errors on graphs it cannot follow: the head_dim stays unknown
        return {}
    out: dict[str, tuple[object, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name in names and vi.type.tensor_type.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                                 for d in vi.type.tensor_type.shape.dim)
    return out


def attention_head_dim(a_shape: tuple[object, ...] | None, b_shape: tuple[object, ...] | None,
                       a_from_softmax: bool) -> int | None:
    """head_dim of an attention MatMul: the last axis of Q (``a`` of QK^T) or of V (``b`` of softmax·V, recognised
    by ``a_from_softmax``); None when the shape is unknown or symbolic."""
    shape = b_shape if a_from_softmax else a_shape
    if not shape:
        return None
    last = shape[-1]
    return last if isinstance(last, int) and last > 0 else None
