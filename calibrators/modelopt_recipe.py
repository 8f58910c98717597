"""NVIDIA Model Optimizer's INT8 diffusers calibration recipe, on our ONNX graph (the accuracy benchmark's peer row).

Where each constant comes from (NVIDIA/TensorRT-Model-Optimizer, ``examples/diffusers/quantization``):

- ``README.md``, the INT8 command for SDXL/SD3/FLUX: ``--calib-size 32 --collect-method min-mean --percentile 1.0
  --alpha 0.8 --n-steps 20 --batch-size 2``: 32 calibration samples, 20 sampler steps, percentile 1.0 (every step
  counts), SmoothQuant alpha 0.8 for linear layers, 2 images per call.
- ``config.py`` ``reset_set_int8_config``: Conv2d input quantizers get ``calib/plugin_calib.py``'s
  ``PercentileCalibrator`` (per-step abs-max, ``min-mean``: calibrators/aggregation.py ``amax_min_mean``, checked
  against that file: the per-step *sum* over calls is divided by the number of steps); Linear input quantizers keep
  ModelOpt's max calibrator with ``axis: -1`` (per input channel: the statistic SmoothQuant needs; ModelOpt's
  ``smoothquant`` then makes the smoothed input per tensor, amax = max over channels). Without SmoothQuant we
  quantize linear inputs per tensor with the global max (a per-channel activation scale cannot feed an INT8 GEMM).
- the example's ``filter_func`` leaves ``conv_in``, ``conv_out``, ``conv_shortcut`` and the time embeddings
  (``time_embedding``, ``time_emb_proj``) in float (``modelopt_policy``).

Implemented here: the samples (32 trajectories x 20 DDIM steps, every state kept), the per-call batch of 2 rows
(so min-mean's sum-over-calls / steps is ModelOpt's 16 calls / 20 steps), min-mean for the inputs of convolutions
and global max for the inputs of MatMul/Gemm (``modelopt_ranges``), and the statistic of the recipe's SmoothQuant
step (alpha 0.8) is ``QDQPolicy(smoothquant=0.8)`` with the recipe's samples (``modelopt_samples``): ``quantize``
takes the per-input-channel abs-max of the smoothed linears' inputs on them and rewrites the graph
(quantization/smoothquant.py, docs/modelopt-recipe.md).

Note on ``--alpha 0.8``: at NVIDIA/TensorRT-Model-Optimizer 5a4242f, ``quantize.py`` applies SmoothQuant only with
``--quant-algo smoothquant`` (``set_quant_config_attr`` puts ``alpha`` into the algorithm only then, and the default
algorithm is ``max``); the README's INT8 command and ``build_sdxl_8bit_engine.sh`` pass ``--alpha 0.8`` without it.
The 0.23 release's ``get_int8_config`` always used ``{"method": "smoothquant", "alpha": alpha}``. Our rows measure
both: without SmoothQuant and with it.
"""

from __future__ import annotations

from dataclasses import replace

import onnx

from calibrators.aggregation import AggregationConfig
from calibrators.calibrate import CalibrateConfig, TensorSelector, collect_stats, generate_samples
from calibrators.estimators import EstimatorConfig
from calibrators.range_estimation import ranges_from_stats
from calibrators.ranges import TensorRanges
from calibrators.sample import CalibSample
from calibrators.sources import SourceConfig
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from pipelines.conditioning import Conditioning

CALIB_SIZE = 32  # README: --calib-size 32 (INT8)
N_STEPS = 20  # README: --n-steps 20
PERCENTILE = 1.0  # README: --percentile 1.0 (min-mean over the first percentile x n_steps steps)
BATCH_SIZE = 2  # README: --batch-size 2 (images per calibration call)
SMOOTHQUANT_ALPHA = 0.8  # README: --alpha 0.8 ("Recommendation: 0.8 for SDXL"); quantization/smoothquant.py
#: Node-name patterns ModelOpt's filter_func keeps float beyond conv_in/conv_out (conv_shortcut: --shortcut float).
FLOAT_PATTERNS = ("*/time_embedding/*", "*/time_emb_proj/*")
LINEAR_OPS = ("MatMul", "Gemm")


def modelopt_config(seed: int = 0, clipped_model_output: bool | None = None, calib_size: int = CALIB_SIZE,
                    n_steps: int = N_STEPS) -> CalibrateConfig:
    """The recipe's calibration: ``calib_size`` DDIM trajectories of ``n_steps`` steps, every state kept, 2 rows per
    call, min-mean over all steps."""
    source = SourceConfig(method="uniform", samples=calib_size * n_steps, steps=n_steps, every=1, seed=seed,
                          clipped_model_output=clipped_model_output)
    return CalibrateConfig(source, EstimatorConfig("max"), AggregationConfig("min-mean", step_fraction=PERCENTILE),
                           batch_rows=BATCH_SIZE)


def linear_inputs(model: onnx.ModelProto) -> set[str]:
    """Tensors that feed a MatMul or Gemm (their first input, the activation)."""
    return {n.input[0] for n in model.graph.node if n.op_type in LINEAR_OPS and n.input}


def modelopt_ranges(work: WorkDir, tensors: TensorSelector, cond: Conditioning | None = None, seed: int = 0,
                    clipped_model_output: bool | None = None, progress: bool = True, calib_size: int = CALIB_SIZE,
                    n_steps: int = N_STEPS) -> TensorRanges:
    """Ranges by ModelOpt's recipe from one statistics collection: min-mean for every tensor except the inputs of
    MatMul/Gemm, which take the global abs-max. ``settings.params.recipe`` records it."""
    cfg = modelopt_config(seed, clipped_model_output, calib_size, n_steps)
    stats, model_sha, params = collect_stats(work, cfg, tensors, cond, progress)
    params = {**params, "recipe": "modelopt-int8-diffusers (min-mean conv inputs, max linear inputs, no SmoothQuant)"}
    kw = {"model_sha256": model_sha, "calibration": cfg.source.method, "calibration_params": params, "seed": seed}
    conv = ranges_from_stats(stats, cfg.estimator, cfg.aggregation, **kw)
    linear = ranges_from_stats(stats, EstimatorConfig("max"), AggregationConfig("global"), **kw)
    feeds_linear = linear_inputs(onnx.load(str(work.model_for("fp32")), load_external_data=False))
    amax = {n: (linear.amax[n] if n in feeds_linear else a) for n, a in conv.amax.items()}
    return replace(conv, amax=amax)



def modelopt_samples(work: WorkDir, cond: Conditioning | None = None, seed: int = 0,
                     clipped_model_output: bool | None = None, progress: bool = True, calib_size: int = CALIB_SIZE,
                     n_steps: int = N_STEPS) -> list[CalibSample]:
    """The recipe's calibration samples (the calib/ cache ``modelopt_ranges`` collected its statistics on). The
    recipe's SmoothQuant step takes its per-input-channel abs-max on them: ``quantize(..., policy with smoothquant
    0.8, samples=modelopt_samples(work))`` (quantization/smoothquant.py); ModelOpt collects that statistic with the
    max calibrator on ``axis=-1`` input quantizers (``smoothquant`` in ``modelopt/torch/quantization/model_calib.py``)."""
    cfg = modelopt_config(seed, clipped_model_output, calib_size, n_steps)
    model_path = work.model_for("fp32")
    return generate_samples(work, work.load_export_info(), cfg, onnx_model_sha256(model_path), cond, progress)
