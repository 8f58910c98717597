"""NVIDIA Model Optimizer (``nvidia-modelopt``) as a peer: ``mtq.quantize`` on the diffusers UNet in PyTorch.

What the diffusers example (NVIDIA/TensorRT-Model-Optimizer ``examples/diffusers/quantization``) does, through the real
package: quantize the backbone with a config and a calibration loop that runs the pipeline (``--calib-size 32
--batch-size 2 --n-steps 20``: 16 pipeline runs of 2 images, 20 steps each), then ``mtq.disable_quantizer`` with its
``filter_func_default`` (time embeddings, ``conv_in``/``conv_out``, ``time_emb_proj``, ``conv_shortcut`` ... float).
Configs (``CONFIGS``):

- ``int8-minmean``: the example's INT8 with ``--collect-method min-mean --percentile 1.0`` (``reset_set_int8_config``):
  Conv2d inputs per tensor with its percentile calibrator (per call abs-max summed per step, the step taken as
  ``call % n_steps``; amax = min over steps of sum / n_steps, a shape-[1] tensor), Linear inputs per input channel
  (``axis -1``) with max, weights per output channel; algorithm max.
- ``int8-max``: the package's ``mtq.INT8_DEFAULT_CFG`` (per-channel weights, per-tensor inputs, max calibration).
- ``int8-sq``: ``mtq.INT8_SMOOTHQUANT_CFG`` with ``{"method": "smoothquant", "alpha": 0.8}`` (the README's alpha).
- ``fp8``: ``mtq.FP8_DEFAULT_CFG`` (E4M3 weights and inputs per tensor, max calibration).

Images come from the fake-quantized PyTorch UNet (``TorchUNetSession``) and from its ONNX export (``export_onnx``,
``torch.onnx.export`` of the quantized module: QuantizeLinear/DequantizeLinear pairs) on ONNX Runtime.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engines.session import ManagedSession

#: The example's ``filter_func_default`` (utils.py): quantizers of modules whose name matches stay disabled.
FILTER = re.compile(r".*(time_emb_proj|time_embedding|conv_in|conv_out|conv_shortcut|add_embedding|pos_embed"
                    r"|time_text_embed|context_embedder|norm_out|x_embedder).*")
CALIB_SIZE = 32  # README INT8 command: --calib-size 32
CALIB_BATCH = 2  # --batch-size 2
CALIB_STEPS = 20  # --n-steps 20
PERCENTILE = 1.0  # --percentile 1.0
SMOOTHQUANT_ALPHA = 0.8  # --alpha 0.8
CONFIGS = ("int8-minmean", "int8-max", "int8-sq", "fp8")


def example_filter(name: str) -> bool:
    """True for a module/quantizer name the example keeps float."""
    return FILTER.match(name) is not None


def min_mean_amax(step_sums: dict[int, Any], total_step: int, percentile: float = PERCENTILE) -> Any:
    """The example's min-mean: min over the first ``int(total_step * percentile)`` steps of (sum over calls of that
    step's abs-max) / ``total_step`` (not / calls). ``step_sums``: step -> summed abs-max (number or tensor)."""
    values = [step_sums[s] / total_step for s in range(int(total_step * percentile))]
    return min(values) if not hasattr(values[0], "shape") else _torch().stack(values).amin(dim=0)


def _torch() -> Any:
    import torch

    return torch


def min_mean_calibrator() -> type:
    """A ModelOpt calibrator class with the example's ``min-mean`` collection (written here, same arithmetic)."""
    torch = _torch()
    from modelopt.torch.quantization.calib.max import MaxCalibrator

    class MinMeanCalibrator(MaxCalibrator):  # type: ignore[misc, valid-type]
        """Per-call abs-max of the whole tensor, summed per step (step = call index mod ``total_step``)."""

        def __init__(self, num_bits: int = 8, axis: Any = None, unsigned: bool = False, track_amax: bool = False,
                     total_step: int = CALIB_STEPS, percentile: float = PERCENTILE) -> None:
            super().__init__(num_bits, axis, unsigned, track_amax)
            self.total_step, self.percentile = total_step, percentile
            self.sums: dict[int, Any] = {}
            self.calls = 0

        @torch.no_grad()
        def collect(self, x: Any) -> None:
            step = self.calls % self.total_step
            amax = x.detach().abs().amax().reshape(1)  # the example's vstack(...).min(0)[0] keeps shape [1]
            self.sums[step] = self.sums[step] + amax if step in self.sums else amax
            self.calls += 1

        def reset(self) -> None:
            self.sums, self.calls, self._calib_amax = {}, 0, None

        def compute_amax(self) -> Any:
            self._calib_amax = min_mean_amax(self.sums, self.total_step, self.percentile)
            return self._calib_amax

    return MinMeanCalibrator


def quant_config(name: str) -> dict[str, Any]:
    """The ``mtq.quantize`` config of row ``name`` (one of ``CONFIGS``), from the package's own configs."""
    import modelopt.torch.quantization as mtq

    if name == "int8-max":
        return copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    if name == "int8-sq":
        cfg = copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG)
        cfg["algorithm"] = {"method": "smoothquant", "alpha": SMOOTHQUANT_ALPHA}
        return cfg
    if name == "fp8":
        return copy.deepcopy(mtq.FP8_DEFAULT_CFG)
    if name == "int8-minmean":
        calib = (min_mean_calibrator(), (), {"num_bits": 8, "axis": None, "total_step": CALIB_STEPS,
                                              "percentile": PERCENTILE})
        return {"quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "parent_class": "nn.Linear", "cfg": {"num_bits": 8, "axis": 0}},
            {"quantizer_name": "*input_quantizer", "parent_class": "nn.Linear", "cfg": {"num_bits": 8, "axis": -1}},
            {"quantizer_name": "*weight_quantizer", "parent_class": "nn.Conv2d", "cfg": {"num_bits": 8, "axis": 0}},
            {"quantizer_name": "*input_quantizer", "parent_class": "nn.Conv2d",
             "cfg": {"num_bits": 8, "axis": None, "calibrator": calib}},
        ], "algorithm": "max"}
    raise ValueError(f"unknown ModelOpt config {name!r}; known: {', '.join(CONFIGS)}")


class TorchUNetSession(ManagedSession):
    """A diffusers UNet module behind the Session protocol (feeds and outputs named as in our ONNX export)."""

    def __init__(self, unet: Any, input_names: list[str]) -> None:
        self.unet = unet
        self._inputs = list(input_names)

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return ["out"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = _torch()
        extra = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()
                 if k not in ("sample", "timestep")}
        with torch.no_grad():
            out = self.unet(torch.from_numpy(np.ascontiguousarray(feeds["sample"])),
                            torch.from_numpy(np.ascontiguousarray(feeds["timestep"])), **extra, return_dict=False)[0]
        return {"out": out.numpy()}

    def activate(self) -> TorchUNetSession:
        return self

    def deactivate(self) -> None:
        return None


def quantize_unet(unet: Any, config: str, forward_loop: Callable[[Any], None]) -> Any:
    """``mtq.quantize(unet, config, forward_loop)`` then the example's filter (``mtq.disable_quantizer``)."""
    import modelopt.torch.quantization as mtq

    mtq.quantize(unet, quant_config(config), forward_loop)
    mtq.disable_quantizer(unet, example_filter)
    return unet


def export_onnx(unet: Any, feeds: dict[str, np.ndarray], out: Path, opset: int = 17) -> Path:
    """The fake-quantized UNet exported with ``torch.onnx.export`` (TorchScript exporter: ModelOpt's quantizers
    export as QuantizeLinear/DequantizeLinear, FP8 as its TRT custom ops), batch dynamic."""
    torch = _torch()
    names = list(feeds)
    args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names)

    class _Wrap(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, *a: Any) -> Any:
            kw = dict(zip(names, a))  # the export's input order (text to image: sample, timestep, hidden states)
            return self.m(kw.pop("sample"), kw.pop("timestep"), **kw, return_dict=False)[0]

    with torch.no_grad():
        torch.onnx.export(_Wrap(unet), args, str(out), input_names=names, output_names=["out"], opset_version=opset,
                          dynamic_axes={n: {0: "batch"} for n in [*names, "out"]}, dynamo=False)
    return out


LABELS = {"int8-minmean": "INT8 min-mean (the example's)", "int8-max": "INT8 max", "int8-sq": "INT8 SmoothQuant 0.8",
          "fp8": "FP8"}
CALIB_SEED = 1000  # calibration trajectories start from seeds 1000..1031 (the evaluation images use 0..N-1)


def calibration_loop(subject: Any, unet: Any) -> None:
    """The example's calibration on the model's own trajectories: ``CALIB_SIZE`` images in runs of ``CALIB_BATCH``,
    ``CALIB_STEPS`` DDIM steps each, sampled as the benchmark samples (text to image: prompts of ``prompts.txt``
    evenly spaced, guidance 7.5)."""
    from pipelines.conditioning_inputs import ConditioningInputs, read_prompts, resolve_conditioning
    from pipelines.runner import DenoiseRunner, seeded_noise
    from pipelines.schedulers import make_scheduler

    info = subject.info
    session = TorchUNetSession(unet, list(info["inputs"]))
    shape = tuple(info["inputs"]["sample"]["shape"][1:])
    prompts = read_prompts(subject.model / "prompts.txt") if subject.text_to_image else []
    size = subject.modelopt_calib_size
    for b in range(size // CALIB_BATCH):
        seeds = range(CALIB_SEED + b * CALIB_BATCH, CALIB_SEED + (b + 1) * CALIB_BATCH)
        cond = None
        if prompts:
            pair = tuple(prompts[(i * len(prompts)) // size] for i in range(b * CALIB_BATCH, (b + 1) * CALIB_BATCH))
            cond = resolve_conditioning(subject.work.root, info, ConditioningInputs(prompts=pair, guidance_scale=7.5))
        runner = DenoiseRunner(session, make_scheduler("ddim", info["scheduler"]), batch_size=CALIB_BATCH)
        runner.sample(seeded_noise(shape, seeds), CALIB_STEPS, cond=cond, use_clipped_model_output=subject.clipped_eps)


def example_feeds(info: dict[str, Any], rows: int = 2) -> dict[str, np.ndarray]:
    """Feeds of ``rows`` rows in the export's input order (zeros; the time step 500)."""
    feeds = {}
    for name, spec in info["inputs"].items():
        shape = [rows, *spec["shape"][1:]] if name != "timestep" else [rows]
        feeds[name] = np.full(shape, 500.0 if name == "timestep" else 0.0, dtype=np.float32)
    return feeds


def modelopt_built(subject: Any, out_dir: Path) -> Any:
    """One PyTorch row and one ONNX-on-ORT row per config in ``CONFIGS`` (benchmarks.peers.Built)."""
    import time

    import modelopt

    from benchmarks.peers import Built, one_line
    from engines.ort_session import OrtSession
    from exporter.loading import load_unet, locate_model

    package = f"nvidia-modelopt {modelopt.__version__}"
    names = list(subject.info["inputs"])
    for config in CONFIGS:
        unet = load_unet(locate_model(subject.model))
        start = time.perf_counter()
        quantize_unet(unet, config, lambda m: calibration_loop(subject, m))
        seconds = time.perf_counter() - start
        yield Built(f"ModelOpt {LABELS[config]}, PyTorch", package, seconds,
                    lambda u=unet: TorchUNetSession(u, names))
        label = f"ModelOpt {LABELS[config]}, ONNX on ORT"
        try:
            start = time.perf_counter()
            path = export_onnx(unet, example_feeds(subject.info), out_dir / f"modelopt_{config}.onnx")
            with OrtSession(path, threads=subject.threads) as s:  # loads here: a graph ORT refuses is one line now
                s.run(example_feeds(subject.info))
            yield Built(label, package, seconds + time.perf_counter() - start,
                        lambda p=path: OrtSession(p, threads=subject.threads))
        except Exception as exc:
            yield Built(label, package, seconds, None, one_line(exc))
