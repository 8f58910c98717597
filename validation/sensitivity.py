"""Layer sensitivity: quantize ONE weighted layer at a time and measure the UNet output error against FP32.

The layers are the nodes that get a weight DequantizeLinear under the work folder's QDQ policy (Conv/Gemm/MatMul
with constant weights, and the split shortcut convs as one layer each). For each, the model in which only that
layer is quantized (its input, weights and — ONNX Runtime target — output; every other weighted node, residual Add
and attention MatMul float) is built in memory and run by ONNX Runtime from bytes on UNet inputs drawn from the
FP32 denoising trajectory. Layers are ranked by output MSE, largest first.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibrators.ranges import TensorRanges
from engines.ort_session import resolve_providers, session_options
from exporter.qdq_insert import insert_qdq, plan_qdq
from exporter.qdq_policy import QDQPolicy
from validation.sensitivity_file import LayerSensitivity
from validation.step_metrics import step_metrics

PROTOBUF_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class SensitivityConfig:
    """steps: sampler steps of the FP32 trajectory; points: compared steps spread over it; num: trajectories
    (batch rows) per compared step; seed: initial noise; scheduler: the sampler; threads: ORT intra-op threads."""

    steps: int = 50
    points: int = 5
    num: int = 4
    seed: int = 0
    scheduler: str = "ddim"
    threads: int = 0


def quantized_layers(model: onnx.ModelProto, ranges: TensorRanges, policy: QDQPolicy) -> list[tuple[str, str]]:
    """(node name, op type) of every node that gets a weight DequantizeLinear under ``policy``, in graph order;
    a split shortcut conv counts once, under its original name."""
    plan = plan_qdq(model, ranges, policy)
    names = {node for node, _ in plan.weights} | {s.conv for s in plan.splits}
    return [(n.name, n.op_type) for n in model.graph.node if n.name in names]


def single_layer_policy(policy: QDQPolicy, layer: str, layers: list[str]) -> QDQPolicy:
    """``policy`` restricted to ``layer``: every other weighted layer kept float, no residual-Add or attention Q/DQ."""
    others = {name for name in layers if name != layer} | set(policy.keep_float)
    return replace(policy, keep_float=tuple(sorted(others)), residual_add=False, attention_matmul=False)


@contextmanager
def _ort_session(model: onnx.ModelProto, threads: int) -> Iterator[Any]:
    """An ONNX Runtime session on ``model``: from bytes when it fits a protobuf, else via a temporary file."""
    import onnxruntime as ort

    opts, providers = session_options(threads), resolve_providers("auto")
    if model.ByteSize() < PROTOBUF_LIMIT:
        yield ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=providers)
        return
    from exporter.onnx_export import save_model

    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_model(model, path, external=True)
        yield ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def run_outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], threads: int = 0) -> list[np.ndarray]:
    """Output ``out`` of ``model`` for each feed dict (one ORT session for all of them)."""
    with _ort_session(model, threads) as sess:
        names = {i.name for i in sess.get_inputs()}
        return [sess.run(["out"], {k: v for k, v in f.items() if k in names})[0] for f in feeds]


def output_error(reference: list[np.ndarray], outputs: list[np.ndarray], timesteps: list[int]) -> tuple[float, float]:
    """(mean over steps of the output MSE, mean over steps of the cosine similarity) against ``reference``."""
    mse = [float(np.mean((r.astype(np.float64) - o.astype(np.float64)) ** 2)) for r, o in zip(reference, outputs,
                                                                                          strict=True)]
    cos = [step_metrics(r, o, t).cosine for r, o, t in zip(reference, outputs, timesteps, strict=True)]
    return float(np.mean(mse)), float(np.mean(cos))


def rank_layers(model: onnx.ModelProto, ranges: TensorRanges, policy: QDQPolicy,
                feeds: list[dict[str, np.ndarray]], threads: int = 0,
                progress: bool = True) -> list[LayerSensitivity]:
    """Every quantized layer with its single-layer output error, sorted by MSE (largest first; ties by name)."""
    from tqdm import tqdm

    layers = quantized_layers(model, ranges, policy)
    names = [name for name, _ in layers]
    timesteps = [int(f["timestep"][0]) for f in feeds]
    reference = run_outputs(model, feeds, threads)
    measured: list[tuple[str, str, float, float]] = []
    for name, op_type in tqdm(layers, desc="layer sensitivity", unit="layer", file=sys.stderr, disable=not progress):
        qmodel = insert_qdq(model, ranges, single_layer_policy(policy, name, names))
        mse, cos = output_error(reference, run_outputs(qmodel, feeds, threads), timesteps)
        measured.append((name, op_type, mse, cos))
    measured.sort(key=lambda m: (-m[2], m[0]))
    return [LayerSensitivity(name, op, mse, cos, rank) for rank, (name, op, mse, cos) in enumerate(measured, 1)]
