"""Calibration of one work folder: inputs from the FP32 trajectory -> statistics on the ONNX tensors -> ranges."""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from calibrators.aggregation import AggregationConfig
from calibrators.calib_store import find_cached, load_cached, save_samples, settings_key
from calibrators.collectors import StatsCollector, TensorStats
from calibrators.estimators import EstimatorConfig
from calibrators.graph_taps import batch_samples, tapped_session
from calibrators.range_estimation import ranges_from_stats
from calibrators.ranges import TensorRanges
from calibrators.sample import CalibSample
from calibrators.sources import SourceConfig, TrajectorySource
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from engines.ort_session import OrtSession
from pipelines.conditioning import Conditioning
from pipelines.conditioning_inputs import raw_conditioning
from pipelines.families.registry import family_of
from pipelines.families.transformer_runtime import adapt_denoiser
from pipelines.runner import DenoiseRunner
from pipelines.schedulers import make_scheduler
from exporter.shortcut_split import split_shortcuts
from exporter.shape_info import infer_value_info


@dataclass(frozen=True)
class CalibrateConfig:
    """Everything ``calibrate`` needs besides the work folder. batch_rows: rows per UNet call when collecting."""

    source: SourceConfig
    estimator: EstimatorConfig
    aggregation: AggregationConfig
    num_bins: int = 2048
    batch_rows: int = 32
    threads: int = 0
    attention: bool = False  # also calibrate the attention-score MatMul inputs (for quantize --attention-matmul)
    tap_budget_gb: float = 4.0  # tapped outputs held at once (a larger model is tapped in several passes)


# (model, attention) -> the activation tensors a Q/DQ rule may quantize (quantization.qdq_rules.calibration_tensors).
# Calibration does not know the placement rules (they belong to the stage after it): the caller hands them in.
TensorSelector = Callable[[onnx.ModelProto, bool], list[str]]

COLLECT_PARAMS = ("batch_rows", "attention")  # recorded in the ranges' params beside the source settings


def cached_samples_for(calib_dir: Path, ranges: TensorRanges) -> list[CalibSample] | None:
    """The cached calibration samples ``ranges`` were computed from (the source settings in its params), or None."""
    source = {k: v for k, v in ranges.settings.params.items() if k not in COLLECT_PARAMS}
    return find_cached(calib_dir, ranges.model_sha256, source)


def generate_samples(work: WorkDir, info: dict[str, Any], cfg: CalibrateConfig, model_sha: str,
                     cond: Conditioning | None = None, progress: bool = True) -> list[CalibSample]:
    """Calibration samples for ``cfg.source``: from ``calib/`` when cached for the same settings, else generated
    with the FP32 model through the runner's scheduler loop and cached. Each sample carries every conditioning
    input the UNet takes (``Conditioning.unet_feeds``: ``encoder_hidden_states``, SDXL's ``text_embeds`` and
    ``time_ids``)."""
    settings = {"model_sha256": model_sha, "source": cfg.source.to_json(),
                "cond_sha": None if cond is None else conditioning_key(cond)}
    cached = load_cached(work.calib_dir, settings)
    if cached is not None:
        print(f"reusing {len(cached)} cached calibration samples from {work.calib_dir / settings_key(settings)}")
        return cached
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    scheduler = make_scheduler(cfg.source.scheduler, info["scheduler"])
    conditioning = cond if cond is not None else raw_conditioning(info, guidance_scale=cfg.source.guidance_scale,
                                                                  seed=cfg.source.seed)
    with OrtSession(work.model, threads=cfg.threads) as sess:
        denoiser, scheduler = adapt_denoiser(family_of(info), info, sess, scheduler)  # transformer families
        runner = DenoiseRunner(denoiser, scheduler, batch_size=cfg.batch_rows)
        source = TrajectorySource(runner, cfg.source, (c, h, w), int(info["scheduler"]["num_train_timesteps"]),
                                  conditioning, batch=cfg.batch_rows)
        items = tqdm(source, total=len(source), desc=f"{cfg.source.method} samples", file=sys.stderr,
                     disable=not progress, mininterval=2)
        samples = save_samples(work.calib_dir, settings, items)
    return samples


def conditioning_key(cond: Conditioning) -> str:
    """Cache key of given conditioning (its rows, added conditions and guidance), so samples made with other
    embeddings are not reused. Without added conditions the key is the one written before they existed."""
    arrays = [cond.cond, cond.uncond if cond.uncond is not None else np.zeros(0)]
    key: dict[str, Any] = {"c": [a.round(6).tolist() for a in arrays], "w": cond.guidance_scale}
    if cond.added:
        key["a"] = {k: np.asarray(v).round(6).tolist() for k, v in sorted(cond.added.items())}
        key["au"] = {k: np.asarray(v).round(6).tolist() for k, v in sorted(cond.added_uncond.items())}
    return settings_key(key)


def tap_groups(model: onnx.ModelProto, tensors: list[str], rows: int, budget_bytes: int) -> list[list[str]]:
    """Split ``tensors`` into groups whose float32 outputs for ``rows`` rows fit ``budget_bytes`` together.

    Sizes come from shape inference: the batch dimension counts as ``rows``, an unknown dimension (attention
    reshapes leave some) as H·W of the UNet input, the largest token count. One group is one pass over the samples."""
    shapes = {v.name: v.type.tensor_type.shape for v in infer_value_info(model)}
    for v in list(model.graph.input) + list(model.graph.output):
        shapes[v.name] = v.type.tensor_type.shape
    for init in model.graph.initializer:  # a constant never needs a tap
        shapes.pop(init.name, None)
    sample_dims = model.graph.input[0].type.tensor_type.shape.dim
    unknown = max(1, sample_dims[2].dim_value * sample_dims[3].dim_value) if len(sample_dims) == 4 else 4096
    groups: list[list[str]] = [[]]
    used = 0
    for name in tensors:
        size = 4
        for i, d in enumerate(shapes[name].dim if name in shapes else []):
            size *= rows if i == 0 else (d.dim_value if d.HasField("dim_value") else unknown)
        if groups[-1] and used + size > budget_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


def collect(model: onnx.ModelProto, scratch_dir: Path, samples: list[CalibSample], tensors: list[str],
            cfg: CalibrateConfig, progress: bool = True) -> TensorStats:
    """Stream every tapped tensor of every sample through a StatsCollector, grouped by time step.

    Tapped outputs are held at once only within a group of tensors whose outputs fit ``cfg.tap_budget_gb``; a model
    too large for one group is run once per group (memory bounded by the budget, compute times the group count)."""
    by_t: dict[int, list[CalibSample]] = defaultdict(list)
    for s in samples:
        by_t[s.t].append(s)
    rows = min(cfg.batch_rows, sum(s.x.shape[0] for s in samples)) if samples else 1
    groups = tap_groups(model, tensors, max(rows, max((s.x.shape[0] for s in samples), default=1)),
                        int(cfg.tap_budget_gb * 2**30))
    # one pass per group; a tensor that alone exceeds the budget gets a group (and a pass) of its own
    collector = StatsCollector(num_bins=cfg.num_bins)
    bar = tqdm(total=len(samples) * len(groups), desc=f"statistics ({len(groups)} pass(es))", file=sys.stderr,
               disable=not progress, mininterval=2)
    for names in groups:
        with tapped_session(model, names, scratch_dir, threads=cfg.threads) as sess:
            for t in sorted(by_t):
                group = by_t[t]
                for feeds, _ in batch_samples(group, cfg.batch_rows):
                    outs = sess.run(feeds)
                    for name in names:
                        collector.update(name, outs.pop(name), t)
                    del outs
                    bar.update(len(feeds["sample"]) // group[0].x.shape[0])
    bar.close()
    return collector.finalize()


def calibrate(work: WorkDir, cfg: CalibrateConfig, tensors: TensorSelector, cond: Conditioning | None = None,
              progress: bool = True) -> TensorRanges:
    """Calibrate ``work``'s FP32 model and return its ranges (not yet saved): statistics of every tensor
    ``tensors`` selects, on the model and on its shortcut-split twin."""
    stats, model_sha, params = collect_stats(work, cfg, tensors, cond, progress)
    return ranges_from_stats(stats, cfg.estimator, cfg.aggregation, model_sha256=model_sha,
                             calibration=cfg.source.method, calibration_params=params, seed=cfg.source.seed)


def collect_stats(work: WorkDir, cfg: CalibrateConfig, tensors: TensorSelector, cond: Conditioning | None = None,
                  progress: bool = True) -> tuple[TensorStats, str, dict[str, Any]]:
    """The per-step statistics ``calibrate`` estimates ranges from, the FP32 model's sha256 and the parameters to
    record (for a caller that estimates several ways from one collection, as benchmarks/accuracy.py does)."""
    info = work.load_export_info()
    model_path = work.model_for("fp32")
    model_sha = onnx_model_sha256(model_path)
    samples = generate_samples(work, info, cfg, model_sha, cond, progress)
    # Statistics are taken on the graph with every shortcut conv split (equal to the FP32 model): it has all the
    # tensors of the original plus the outputs of the split branch convolutions, so one ranges file serves every
    # --shortcut mode and every target.
    model = onnx.load(str(model_path))
    split = split_shortcuts(model)
    names = sorted(set(tensors(model, cfg.attention)) | set(tensors(split, cfg.attention)))
    del model
    stats = collect(split, work.root, samples, names, cfg, progress)
    params = {**cfg.source.to_json(), **{k: getattr(cfg, k) for k in COLLECT_PARAMS}}
    return stats, model_sha, params
