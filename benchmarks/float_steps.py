"""INT8 sampling with the first (high-noise) steps on the FP32 UNet: how many float steps undo the amplification
of a clipping sampler (``python -m tools sample --precision int8 --float-above-t T``).

    python -m benchmarks.float_steps [--steps 50 100] [--num 64] [--thresholds 990 950 900 800]

The INT8 model is the accuracy benchmark's default row (NDTC, 256 samples, mse ranges, shortcut split,
``onnxruntime`` target); DDIM with the model's own scheduler config (``clip_sample`` true); PSNR of the final images
against FP32 images from the same noise, as in the accuracy benchmark.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx

from benchmarks.accuracy import CLASSIFIER, ensure_export
from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from calibrators.aggregation import AggregationConfig
from calibrators.calibrate import CalibrateConfig, calibrate
from quantization.qdq_rules import calibration_tensors
from calibrators.estimators import EstimatorConfig
from calibrators.sources import SourceConfig
from engines.ort_session import OrtSession
from pipelines.runner import sample_images, seeded_noise
from pipelines.schedulers import make_scheduler
from engines.session import Session
from engines.timestep_routed import TimestepRoutedSession
from quantization.quantize import quantize
from quantization.qdq_policy import QDQPolicy
from validation.digit_classifier import DigitFeatures
from validation.image_metrics import psnr


def images(session: Session, info: dict, noise: np.ndarray, steps: int) -> np.ndarray:  # type: ignore[type-arg]
    with session:
        return sample_images(session, make_scheduler("ddim", info["scheduler"]), noise, steps, batch_size=64).images


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[50, 100])
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--thresholds", type=float, nargs="+", default=[990, 950, 900, 800])
    args = p.parse_args(argv)
    command = command_line("benchmarks.float_steps", argv)
    work = ensure_export(REPO / "models" / "digits-ddpm", REPO / "work" / "bench-digits")
    info = work.load_export_info()
    cfg = CalibrateConfig(SourceConfig(method="ndtc", samples=256, steps=50), EstimatorConfig("mse"),
                          AggregationConfig("groups", groups=4))
    ranges = calibrate(work, cfg, calibration_tensors, progress=False)
    int8 = work.root / "bench-models" / "float_steps_int8.onnx"
    int8.parent.mkdir(exist_ok=True)
    onnx.save(quantize(onnx.load(str(work.model)), ranges, QDQPolicy(target="onnxruntime"))[0], str(int8))
    features = DigitFeatures(CLASSIFIER)
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    noise = seeded_noise((c, h, w), range(args.num))
    rows = []
    for steps in args.steps:
        ref = images(OrtSession(work.model), info, noise, steps)
        ref_label = features.predict(ref)
        for threshold in [None, *args.thresholds]:
            if threshold is None:
                session: Session = OrtSession(int8)
                float_calls = 0
            else:
                routed = TimestepRoutedSession(OrtSession(work.model), OrtSession(int8), threshold)
                session = routed
            img = images(session, info, noise, steps)
            if threshold is not None:
                float_calls = routed.calls["high"]
            value, agree = psnr(img, ref), float(np.mean(features.predict(img) == ref_label))
            label = "all INT8" if threshold is None else f"FP32 for t >= {threshold:g}"
            rows.append([steps, label, f"{float_calls}/{steps}", f"{value:.2f}", f"{100 * agree:.0f}%"])
            print(rows[-1], flush=True)
    body = "\n".join([
        *section_head("INT8 with the first steps in FP32 (DDIM, clip_sample as configured)", command),
        f"- Model: `models/digits-ddpm`, {args.num} seeds; INT8 = the accuracy table's `ndtc + split` "
        "(`onnxruntime` target); FP32 steps: UNet calls at time steps >= the threshold run the FP32 model "
        "(`python -m tools sample --precision int8 --float-above-t T`). PSNR and digit agreement against FP32 images.",
        "",
        markdown_table(["DDIM steps", "UNet", "FP32 calls", "PSNR dB", "agree"], rows),
    ])
    write_section("float-steps", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
