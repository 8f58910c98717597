"""Layer sensitivity: quantize ONE weighted layer at a time and measure the UNet output error against FP32.

The layers are the nodes that get a weight DequantizeLinear under the work folder's QDQ policy (Conv/Gemm/MatMul
with constant weights, and the split shortcut convs as one layer each). For each, the model in which only that
layer is quantized (its input, weights and — ONNX Runtime target — output; every other weighted node, residual Add
and attention MatMul float) is built in memory and run by ONNX Runtime from bytes. Two measures (``metric``):

- ``step``: the UNet output on inputs drawn from the FP32 denoising trajectory at a few steps (fast: one call per
  step and layer);
- ``image``: the final images of the whole denoising loop from fixed noise (steps × slower, but it sees how a
  layer's error accumulates along the trajectory: a small systematic error in the last conv can matter more for
  the images than a large noise-like error in the first).

Layers are ranked by MSE, largest first.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from calibrators.ranges import TensorRanges
from common.errors import UserError
from common.protobuf import fits_protobuf
from engines.ort_session import resolve_providers, session_options
from pipelines.conditioning import Conditioning
from pipelines.runner import sample_images, to_images
from engines.session import Session
from quantization.qdq_insert import insert_qdq, plan_qdq
from quantization.qdq_policy import QDQPolicy
from validation.sensitivity_file import LayerSensitivity
from validation.step_metrics import step_metrics

METRICS = ("step", "image")


@dataclass(frozen=True)
class SensitivityConfig:
    """steps: sampler steps of the FP32 trajectory; points: compared steps spread over it (``step`` metric); num:
    trajectories (batch rows); seed: initial noise; scheduler: the sampler; threads: ORT intra-op threads;
    metric: ``step`` (UNet output at trajectory inputs) or ``image`` (final images of the whole loop);
    clipped_model_output: ``scheduler.step``'s use_clipped_model_output (None: not passed)."""

    steps: int = 50
    points: int = 5
    num: int = 4
    seed: int = 0
    scheduler: str = "ddim"
    threads: int = 0
    metric: str = "step"
    clipped_model_output: bool | None = None


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


class BytesSession:
    """The Session protocol over an in-memory ONNX Runtime session (what ``DenoiseRunner`` needs)."""

    def __init__(self, sess: Any) -> None:
        self.sess = sess

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.sess.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.sess.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = set(self.input_names)
        outs = self.sess.run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in names})
        return dict(zip(self.output_names, outs, strict=True))

    def __enter__(self) -> BytesSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@contextmanager
def ort_session(model: onnx.ModelProto, threads: int = 0) -> Iterator[BytesSession]:
    """An ONNX Runtime session on ``model``: from bytes when it fits a protobuf, else via a temporary file."""
    import onnxruntime as ort

    fp8 = any(t.data_type == onnx.TensorProto.FLOAT8E4M3FN for t in model.graph.initializer)
    opts, providers = session_options(threads, fp8=fp8), resolve_providers("auto")
    if fits_protobuf(model):
        yield BytesSession(ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=providers))
        return
    from exporter.onnx_export import save_model

    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_model(model, path, external=True)
        yield BytesSession(ort.InferenceSession(str(path), sess_options=opts, providers=providers))


@contextmanager
def model_session(model: onnx.ModelProto, threads: int = 0, backend: str = "ort") -> Iterator[Session]:
    """A session on the in-memory ``model``: ONNX Runtime (``ort_session``) or OpenVINO (``openvino``: compiled from
    a temporary file, not cached, since every single-layer model is compiled once)."""
    if backend == "ort":
        with ort_session(model, threads) as sess:
            yield sess
        return
    from engines.cpu_backend import cpu_session
    from exporter.onnx_export import save_model

    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_model(model, path, external=not fits_protobuf(model))
        with cpu_session(path, backend, threads) as sess:
            yield sess  # type: ignore[misc]


def _mse_cosine(reference: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[float, float]:
    """(mean over pairs of the MSE, mean over pairs of the cosine similarity of the flattened arrays)."""
    mse = [float(np.mean((r.astype(np.float64) - o.astype(np.float64)) ** 2)) for r, o in zip(reference, outputs,
                                                                                          strict=True)]
    cos = [step_metrics(r, o, 0).cosine for r, o in zip(reference, outputs, strict=True)]
    return float(np.mean(mse)), float(np.mean(cos))


class ErrorProbe(Protocol):
    """How one model's error against FP32 is measured: ``reference`` runs once on FP32, ``error`` per model."""

    def reference(self, fp32: Session) -> None: ...

    def error(self, sess: Session) -> tuple[float, float]: ...


class StepProbe:
    """UNet output at fixed trajectory inputs (one feed dict per compared step): MSE in output units² (ε² for
    ε-prediction models) and cosine, each averaged over the steps."""

    metric = "step"

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.ref: list[np.ndarray] = []

    def reference(self, fp32: Session) -> None:
        self.ref = [fp32.run(f)["out"] for f in self.feeds]

    def error(self, sess: Session) -> tuple[float, float]:
        return _mse_cosine(self.ref, [sess.run(f)["out"] for f in self.feeds])


class ImageProbe:
    """The whole denoising loop from fixed noise: MSE of the final images in [0, 1] (pixel units²) and cosine of
    the final samples (model space). Slower than ``StepProbe`` (steps × UNet calls per layer), but it sees how
    each layer's error accumulates along the trajectory."""

    metric = "image"

    def __init__(self, noise: np.ndarray, scheduler: Any, steps: int, seed: int, cond: Conditioning | None,
                 clipped_model_output: bool | None = None,
                 decode: Callable[[np.ndarray], np.ndarray] = to_images) -> None:
        self.noise, self.scheduler, self.steps, self.seed, self.cond = noise, scheduler, steps, seed, cond
        self.clipped_model_output = clipped_model_output
        self.decode = decode  # final samples -> images in [0, 1] (a text-to-image folder's VAE decoder)
        self.ref = np.zeros(0)
        self.ref_images = np.zeros(0)

    def _sample(self, sess: Session) -> np.ndarray:
        return sample_images(sess, self.scheduler, self.noise, self.steps, seed=self.seed, cond=self.cond,
                             use_clipped_model_output=self.clipped_model_output).samples

    def reference(self, fp32: Session) -> None:
        self.ref = self._sample(fp32)
        self.ref_images = self.decode(self.ref).astype(np.float64)

    def error(self, sess: Session) -> tuple[float, float]:
        out = self._sample(sess)
        mse = float(np.mean((self.decode(out).astype(np.float64) - self.ref_images) ** 2))
        return mse, step_metrics(self.ref, out, 0).cosine


def rank_layers(model: onnx.ModelProto, ranges: TensorRanges, policy: QDQPolicy, probe: ErrorProbe,
                threads: int = 0, progress: bool = True, only: Sequence[str] | None = None,
                backend: str = "ort") -> list[LayerSensitivity]:
    """Every quantized layer (or those named in ``only``, e.g. the top of a cheaper ranking) with its single-layer
    error under ``probe``, sorted by MSE (largest first; ties by name); ``backend`` ``ort`` or ``openvino`` runs the
    models (the FP32 reference on the same backend)."""
    from tqdm import tqdm

    layers = quantized_layers(model, ranges, policy)
    names = [name for name, _ in layers]
    if only is not None:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise UserError(f"not quantized layers: {', '.join(unknown[:5])}")
        layers = [(name, op) for name, op in layers if name in set(only)]
    with model_session(model, threads, backend) as fp32:
        probe.reference(fp32)
    measured: list[tuple[str, str, float, float]] = []
    for name, op_type in tqdm(layers, desc="layer sensitivity", unit="layer", file=sys.stderr, disable=not progress):
        with model_session(insert_qdq(model, ranges, single_layer_policy(policy, name, names)), threads,
                           backend) as sess:
            mse, cos = probe.error(sess)
        measured.append((name, op_type, mse, cos))
    measured.sort(key=lambda m: (-m[2], m[0]))
    return [LayerSensitivity(name, op, mse, cos, rank) for rank, (name, op, mse, cos) in enumerate(measured, 1)]
