"""Validation of a quantized work folder with Polygraphy's Comparator along the denoising schedule.

Inputs are the states the FP32 UNet sees on its real trajectory at several steps; they are saved in Polygraphy's
input JSON format so ``polygraphy run WORK/model.onnx --onnxrt --load-inputs WORK/report/validate_inputs.json``
replays them. The FP32 model runs in an ``OnnxrtRunner``; the quantized model in an ``OnnxrtRunner`` (CPU) or a
``TrtRunner`` on a TensorRT engine (GPU). Per step: cosine, PSNR, SNR, mean/max absolute error; Polygraphy's own
``CompareFunc.simple`` verdict is recorded beside them. With time-step group graphs (``quantize --timestep-groups
K``) or a grouped TensorRT build, each step is compared on the graph (engine) of its group, and ``validate.json``
names it per step. Then final images over N seeds: PSNR, SSIM, and the
digit-feature (or a user-supplied ONNX Inception) Fréchet distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibrators.ranges import TensorRanges
from common.errors import UserError
from common.onnx_file import load_onnx
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from engines.group_manifest import grouped_manifest_for
from engines.ort_session import OrtSession, holds_fp8, session_options
from pipelines.conditioning import Conditioning
from pipelines.runner import sample_images, seeded_noise
from pipelines.trajectory_health import TrajectoryHealth
from pipelines.schedulers import make_scheduler
from quantization.record import QuantizeRecord
from engines.session import Session
from engines.timestep_routed import group_index
from validation.image_metrics import frechet_distance, psnr, ssim
from validation.step_metrics import StepMetrics, step_metrics
from validation.trajectory_inputs import spread_steps, trajectory_feeds


@dataclass(frozen=True)
class Thresholds:
    """Gates: a step or the images failing any of them makes ``validate`` exit 1. None disables a gate."""

    min_cosine: float | None = 0.95
    min_step_psnr: float | None = None
    min_snr: float | None = 10.0
    max_abs_error: float | None = None
    min_image_psnr: float | None = 25.0
    min_ssim: float | None = None


@dataclass(frozen=True)
class ValidateConfig:
    """steps: sampler steps; points: time steps compared (spread over the schedule, >= 5 by default);
    num: trajectories per compared step; images: seeds for the final-image metrics."""

    steps: int = 50
    points: int = 5
    num: int = 4
    images: int = 16
    seed: int = 0
    scheduler: str = "ddim"
    precision: str = "int8"
    clipped_model_output: bool | None = None  # scheduler.step's use_clipped_model_output (None: not passed)
    thresholds: Thresholds = field(default_factory=Thresholds)


def validate_file(precision: str = "int8") -> str:
    """The file ``validate`` writes in WORK/report/: ``validate.json`` (INT8) or ``validate.<precision>.json``."""
    return "validate.json" if precision == "int8" else f"validate.{precision}.json"


def check_work(work: WorkDir, precision: str) -> tuple[dict[str, Any], Path]:
    """The export info and quantized model, after the bad-input checks (each a one-line UserError)."""
    info = work.load_export_info()
    qpath = work.model_for(precision)
    fp32 = work.model_for("fp32")
    record_path = work.quantize_record(qpath)
    if precision in ("int8", "fp8") and record_path.is_file():
        record = QuantizeRecord.load(record_path)
        sha = onnx_model_sha256(fp32)
        if record.source_model_sha256 != sha:
            raise UserError(f"'{qpath}' was quantized from another model than '{fp32}' (see {record_path}); "
                            f"run python -m tools quantize {work.root} again")
    if work.ranges.is_file():
        TensorRanges.load(work.ranges, expected_model_sha256=onnx_model_sha256(fp32))
    q_inputs = _input_shapes(qpath)
    for name, spec in info["inputs"].items():
        want = [d if isinstance(d, int) else None for d in spec["shape"]]
        got = q_inputs.get(name)
        if got is None or len(got) != len(want) or any(w is not None and g not in (w, None)
                                                         for w, g in zip(want, got, strict=True)):
            raise UserError(f"'{qpath}' input '{name}' has shape {got}, but export.json says {spec['shape']}")
    return info, qpath


def _input_shapes(path: Path) -> dict[str, list[int | None]]:
    model = load_onnx(path)
    return {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}


@dataclass(frozen=True)
class QuantizedGraph:
    """A quantized graph the per-step comparison runs: its file name in the work folder (an ONNX graph, or a TensorRT
    engine) and the inclusive diffusion time steps it serves (None: every step)."""

    name: str
    bounds: tuple[int, int] | None = None


@dataclass(frozen=True)
class StepComparison:
    """Per compared step (in feed order): our metrics and the graph that served it; Polygraphy's verdict."""

    metrics: list[StepMetrics]
    graphs: list[str]
    polygraphy_passed: bool
    grouped: bool = False  # the quantized side is a set of time-step group graphs (or engines)


def quantized_graphs(quantized: Path, plan: Path | None = None) -> list[QuantizedGraph]:
    """The graphs the quantized side runs: a grouped TensorRT build's group engines (``plan``'s ``.plan.json``),
    else ``quantized``'s time-step group graphs (``quantize --timestep-groups K``), else the one graph."""
    if plan is not None:
        from engines.tensorrt.plan import read_plan_info

        info = read_plan_info(plan)
        if info.timestep_groups:
            return [QuantizedGraph(g.plan, (g.first_t, g.last_t)) for g in info.timestep_groups]
        return [QuantizedGraph(plan.name)]
    manifest = grouped_manifest_for(quantized)
    if manifest is None:
        return [QuantizedGraph(quantized.name)]
    return [QuantizedGraph(g.model, (g.first_t, g.last_t)) for g in manifest.groups]


def serving_graph(graphs: list[QuantizedGraph], feed: dict[str, np.ndarray]) -> int:
    """Index in ``graphs`` of the graph that serves ``feed`` (by its time step, as TimestepGroupedSession routes)."""
    if graphs[0].bounds is None:
        return 0
    t = np.asarray(feed["timestep"], dtype=np.float64).reshape(-1)
    bounds = [g.bounds for g in graphs if g.bounds is not None]
    first, last = (group_index(bounds, float(v)) for v in (t.min(), t.max()))
    if first != last:
        raise ValueError(f"one compared step mixes time steps of groups {first} and {last}: {np.unique(t)}")
    return first


def compare_steps(fp32: Path, quantized: Path, feeds: list[dict[str, np.ndarray]], inputs_json: Path,
                  plan: Path | None = None, verbose: bool = False,
                  openvino_cache: Path | None = None) -> StepComparison:
    """Polygraphy Comparator: FP32 OnnxrtRunner against the quantized runner on ``feeds`` (one iteration per
    step): the TensorRT engine ``plan``, else OpenVINO when ``openvino_cache`` (its model cache folder) is given, else
    ONNX Runtime. With time-step groups (``quantized_graphs``) each step is compared on its group's graph or engine
    (one ``Comparator.run`` per group, over that group's steps). Returns our per-step metrics, the graph of each step
    and Polygraphy's ``CompareFunc.simple`` verdict (rtol/atol 5e-2, every group). The feeds are saved to
    ``inputs_json`` in Polygraphy's format (``polygraphy run --load-inputs``)."""
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, CompareFunc
    from polygraphy.json import save_json
    from polygraphy.logger import G_LOGGER

    if not verbose:
        G_LOGGER.module_severity = G_LOGGER.CRITICAL  # our per-step table replaces Polygraphy's histograms

    def cpu_session(path: Path) -> Any:  # our session options (exact INT8 kernels on CPUs without VNNI)
        return lambda: ort.InferenceSession(str(path), session_options(fp8=holds_fp8(path)),
                                            providers=["CPUExecutionProvider"])

    graphs = quantized_graphs(quantized, plan)
    grouped = graphs[0].bounds is not None

    def quantized_runner(index: int) -> Any:
        if plan is not None:  # the quantized model as a TensorRT engine (GPU)
            from engines.tensorrt.polygraphy_loaders import trt_runner

            return trt_runner(plan, group=index if grouped else None)
        path = quantized.parent / graphs[index].name
        if openvino_cache is not None:
            from engines.openvino_polygraphy import openvino_runner

            return openvino_runner(path, openvino_cache)
        return OnnxrtRunner(cpu_session(path), name="quantized")

    served = [serving_graph(graphs, f) for f in feeds]
    metrics: list[StepMetrics | None] = [None] * len(feeds)
    passed = True
    for index in sorted(set(served)):
        steps = [i for i, g in enumerate(served) if g == index]
        runners = [OnnxrtRunner(cpu_session(fp32), name="fp32"), quantized_runner(index)]
        results = Comparator.run(runners, data_loader=[feeds[i] for i in steps])
        passed &= bool(Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(rtol=5e-2, atol=5e-2)))
        for i, r, q in zip(steps, results[0][1], results[1][1], strict=True):
            metrics[i] = step_metrics(r["out"], q["out"], int(feeds[i]["timestep"][0]))
    inputs_json.parent.mkdir(parents=True, exist_ok=True)
    save_json(list(feeds), str(inputs_json), description="validate inputs")
    return StepComparison([m for m in metrics if m is not None], [graphs[g].name for g in served], passed, grouped)


def final_images(fp32: Path, quantized: Path, info: dict[str, Any], cfg: ValidateConfig,
                 cond: Conditioning | None,
                 health: list[TrajectoryHealth] | None = None,
                 quantized_session: Callable[[Path], Session] = OrtSession,
                 decode: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FP32 (ONNX Runtime) and quantized (``quantized_session``, default ONNX Runtime) final images in [0, 1] from the
    same ``cfg.images`` seeds (image i: seed cfg.seed+i); the two runs' trajectory health is appended to ``health``
    when given. ``decode``: final samples -> images (a text-to-image folder's VAE decoder:
    pipelines.text2image.latent_decoder); default diffusers' post-processing."""
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    noise = seeded_noise((c, h, w), range(cfg.seed, cfg.seed + cfg.images))
    out = []
    for path, open_session in ((fp32, OrtSession), (quantized, quantized_session)):
        with open_session(path) as sess:
            run = sample_images(sess, make_scheduler(cfg.scheduler, info["scheduler"]), noise, cfg.steps,
                                seed=cfg.seed, cond=cond, use_clipped_model_output=cfg.clipped_model_output)
        out.append(run.images if decode is None else decode(run.samples))
        if health is not None:
            health.append(run.health)
    return out[0], out[1]


def image_metrics(ref: np.ndarray, img: np.ndarray, classifier: Path | None,
                  inception_onnx: Path | None) -> dict[str, float]:
    """PSNR/SSIM, plus FD on digit features (1×32×32 images) or on an ONNX Inception feature extractor."""
    result = {"psnr": psnr(img, ref), "ssim": ssim(img, ref), "num": float(len(img))}
    if classifier is not None and ref.shape[1:] == (1, 32, 32) and (classifier / "model.safetensors").is_file():
        from validation.digit_classifier import DigitFeatures

        feats = DigitFeatures(classifier)
        result["fd_digits"] = frechet_distance(feats.features(img), feats.features(ref))
    if inception_onnx is not None:
        from validation.inception import inception_features

        result["fid"] = frechet_distance(inception_features(inception_onnx, img),
                                         inception_features(inception_onnx, ref))
    return result


def violations(steps: list[StepMetrics], images: dict[str, float], th: Thresholds) -> list[str]:
    """Human-readable threshold violations (empty: passed)."""
    bad = []
    for s in steps:
        if th.min_cosine is not None and s.cosine < th.min_cosine:
            bad.append(f"t={s.t}: cosine {s.cosine:.4f} < {th.min_cosine}")
        if th.min_step_psnr is not None and s.psnr_db < th.min_step_psnr:
            bad.append(f"t={s.t}: PSNR {s.psnr_db:.2f} dB < {th.min_step_psnr}")
        if th.min_snr is not None and s.snr_db < th.min_snr:
            bad.append(f"t={s.t}: SNR {s.snr_db:.2f} dB < {th.min_snr}")
        if th.max_abs_error is not None and s.max_abs > th.max_abs_error:
            bad.append(f"t={s.t}: max abs error {s.max_abs:.4g} > {th.max_abs_error}")
    if th.min_image_psnr is not None and images["psnr"] < th.min_image_psnr:
        bad.append(f"images: PSNR {images['psnr']:.2f} dB < {th.min_image_psnr}")
    if th.min_ssim is not None and images["ssim"] < th.min_ssim:
        bad.append(f"images: SSIM {images['ssim']:.4f} < {th.min_ssim}")
    return bad


def thresholds_json(th: Thresholds) -> dict[str, float | None]:
    return asdict(th)


def trajectory_inputs(fp32: Path, info: dict[str, Any], cfg: ValidateConfig,
                      cond: Conditioning | None) -> list[dict[str, np.ndarray]]:
    """Feeds at ``cfg.points`` steps spread over the schedule (first and last included)."""
    return trajectory_feeds(fp32, info, cfg.steps, spread_steps(cfg.steps, cfg.points), cfg.num, cfg.seed, cond,
                            cfg.scheduler, cfg.clipped_model_output)
