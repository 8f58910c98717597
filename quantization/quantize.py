"""The quantize stage as one library call: plan -> weight rounding -> rewrite, and the atomic save of its result.

``quantize(model, ranges, policy)`` is what ``python -m tools quantize``, ``pipeline``, sensitivity and every
benchmark call; its ``QuantizeRecord`` is what ``quantize.<tag>.json`` holds.
"""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx

from calibrators.ranges import TensorRanges
from calibrators.sample import CalibSample
from common.errors import UserError
from common.hashing import onnx_model_sha256
from engines.group_manifest import remove_group_files
from exporter.onnx_export import save_model
from quantization.qdq_insert import plan_qdq, rewrite
from quantization.qdq_policy import QDQPolicy
from quantization.record import QuantizeRecord
from quantization.smoothquant import smooth_with_samples
from quantization.weight_memory import weight_memory
from quantization.weight_rounding import RoundingConfig, learn_rounding

COUNTED_OPS = ("QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Gemm")


def check_ranges_bits(ranges: TensorRanges, policy: QDQPolicy, source: str = "the ranges") -> None:
    """UserError unless ``ranges`` were estimated for the activation grid of ``policy`` (INT8; FP8 takes the amax of
    any estimator: its grid is not the integer one the estimator's ``bits`` describe)."""
    if policy.fp8:
        return
    bits = ranges.settings.estimator.bits
    if bits != policy.activation_bits:
        raise UserError(f"{source} were estimated for a {bits}-bit grid (calibrate --bits {bits}), but activations "
                        f"are INT{policy.activation_bits} in every Q/DQ graph: calibrate with --bits "
                        f"{policy.activation_bits}")


def quantize(model: onnx.ModelProto, ranges: TensorRanges, policy: QDQPolicy, *,
             rounding: RoundingConfig | None = None, samples: Sequence[CalibSample] | None = None,
             scratch_dir: Path | None = None, ranges_file: str = "", progress: bool = True,
             ) -> tuple[onnx.ModelProto, QuantizeRecord]:
    """The Q/DQ model of ``model`` (untouched) under ``policy`` with activation ranges from ``ranges``.

    ``policy.weight_rounding == "adaround"`` needs ``samples`` (the calibration samples the ranges came from, time
    steps included), ``rounding`` settings and a ``scratch_dir`` for the tapped model; so does ``policy.smoothquant``
    (SmoothQuant's per-channel statistics are taken on the samples, and the graph is smoothed before the Q/DQ).
    Returns the model and its record (model name and sha256 are filled in by ``save_quantized``)."""
    policy.check_buildable()  # e.g. INT4 blocks TensorRT cannot build, before any work
    check_ranges_bits(ranges, policy, f"ranges '{ranges_file}'" if ranges_file else "the ranges")
    smooth_report = None
    if policy.smoothquant:
        if not samples or scratch_dir is None:
            raise UserError("--smoothquant needs the calibration samples of the ranges file "
                            "(python -m tools calibrate WORK again)")
        model, ranges, smoothed = smooth_with_samples(model, ranges, policy, list(samples), scratch_dir, progress)
        smooth_report = {"alpha": policy.smoothquant, "inputs": [s.to_json() for s in smoothed]}
    plan = plan_qdq(model, ranges, policy)
    rounded, rounding_report = None, None
    if policy.weight_rounding == "adaround":
        if not samples or scratch_dir is None:
            raise UserError("--weight-rounding adaround needs the calibration samples of the ranges file "
                            "(python -m tools calibrate WORK again)")
        rounded, rounding_report = learn_rounding(model, plan, policy, list(samples), rounding or RoundingConfig(),
                                                  scratch_dir, progress)
    source_memory = weight_memory(model)
    qmodel = rewrite(model, plan, policy, rounded=rounded)
    counts = collections.Counter(n.op_type for n in qmodel.graph.node)
    record = QuantizeRecord(
        policy=policy, source_model_sha256=ranges.model_sha256, ranges_file=ranges_file,
        ranges_settings=ranges.settings.to_dict(), summary=plan.summary(),
        op_counts={k: counts[k] for k in COUNTED_OPS}, float_nodes=list(plan.float_nodes),
        kernels=kernel_report(policy),
        weight_memory_bytes={"source": source_memory.to_json(), "quantized": weight_memory(qmodel).to_json()},
        warnings=list(plan.warnings), weight_rounding=rounding_report, smoothquant=smooth_report)
    return qmodel, record


def save_quantized(qmodel: onnx.ModelProto, record: QuantizeRecord, out: Path, record_path: Path, *,
                   external: bool = False, command: str = "") -> QuantizeRecord:
    """Write ``qmodel`` to ``out`` (external data when ``external``) and its record to ``record_path``: data first,
    then the .onnx that references it, the record last, each by an atomic rename (nothing half-written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        save_model(qmodel, tmp / out.name, external=external)
        record = record.saved_as(out.name, onnx_model_sha256(tmp / out.name), command)
        record.save(tmp / record_path.name)
        remove_group_files(out)  # group graphs of an earlier --timestep-groups run belong to the old graph
        for f in sorted(tmp.iterdir(), key=lambda f: (f.name == record_path.name, f.suffix == ".onnx")):
            f.replace((record_path.parent if f.name == record_path.name else out.parent) / f.name)
    return record


def kernel_report(policy: QDQPolicy) -> list[str]:
    """Which quantized kernels are real and which are emulated, in words."""
    if policy.fp8:
        return ["weights: FP8 E4M3 per output channel (amax/448 scales, round to nearest even, saturating), "
                "activations: FP8 E4M3 per tensor (amax/448); zero points FLOAT8E4M3FN 0, opset 19",
                "TensorRT (compute capability >= 8.9: Ada, Hopper, Blackwell): real FP8 kernels in a strongly typed "
                "engine; ONNX Runtime's CPU provider simulates FP8 (dequantizes and computes in float)"]
    lines = []
    rounding = {"nearest": "amax scales, round to nearest", "mse": "MSE-searched scales, round to nearest",
                "adaround": "MSE-searched scales, AdaRound-learned rounding"}[policy.weight_rounding]
    if policy.weight_bits == 4:
        linear = "amax scales, AdaRound-learned rounding" if policy.weight_rounding == "adaround" else \
            "amax scales, round to nearest"
        lines.append(f"MatMul/Gemm weights: blocked INT4 ({policy.int4_block_size} per amax scale; {linear}), "
                     "weight-only (their inputs stay float): real INT4 kernels, ONNX Runtime MatMulNBits (accuracy "
                     "level 0) and TensorRT INT4 weight-only GEMM (opset 21)")
        if policy.int4_scope == "all":
            lines.append(f"convolution weights: 4-bit values ({rounding}) stored in INT8 containers: the kernels are "
                         "INT8 (TensorRT and ONNX Runtime have no INT4 convolution); 4-bit accuracy is exact, "
                         "4-bit memory and speed are emulated")
        else:
            lines.append(f"convolution weights: INT8 per-channel ({rounding}), real INT8 kernels")
    else:
        lines.append(f"weights: INT8 per-channel ({rounding}), real INT8 kernels")
    if policy.target == "onnxruntime":
        lines.append("ONNX Runtime CPU: DQ->Conv->Q groups fuse into QLinearConv (real INT8); convolutions without "
                     "an output Q (split shortcut branches, the last conv) run in float on dequantized inputs")
    else:
        lines.append("TensorRT: Q/DQ placement for explicit quantization (strongly typed INT8 engines); on ONNX "
                     "Runtime's CPU provider this graph runs float convolutions on dequantized inputs")
    return lines
