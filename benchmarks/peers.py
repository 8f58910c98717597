"""Peers measured with the real libraries: ours against NVIDIA ModelOpt, NNCF and ONNX Runtime's quantize_static.

    .venv/bin/pip install -r requirements-peers.txt        # nvidia-modelopt 0.47.0, nncf 3.4.0 (once)
    python -m benchmarks.peers [--model models/digits-ddpm] [--steps 20 50 100] [--num 64] [--rows ROW ...]

On one bundled model, from the same FP32 trajectories and seeds (image i from seed i, DDIM, sampled as ``make demo``
samples it: pixel model with ``--use-clipped-model-output``, text to image with guidance 7.5 and prompt i mod 60 of
the model's ``prompts.txt``), one row per quantizer (``ROWS``):

- ours: ``python -m tools calibrate WORK`` + ``quantize WORK`` with their defaults (the demo's calibration flags),
  and the same ranges quantized with our best INT8 options (``BEST_EXCLUDE``: attention proj_in/proj_out float too);
- ModelOpt (benchmarks/peers_modelopt.py): ``mtq.quantize`` on the diffusers UNet in PyTorch with the diffusers
  example's filter and calibration (32 trajectories of 20 steps, 2 images per call) — INT8 min-mean (the example's),
  INT8 max, INT8 SmoothQuant 0.8, FP8 — images from the fake-quantized PyTorch UNet, and from its ONNX export on
  ONNX Runtime (a failing export or load is one line in the table);
- NNCF (benchmarks/peers_nncf.py): ``nncf.quantize`` on our FP32 ``model.onnx`` with our calibration samples
  (calibrators/calib_store.py) as its ``nncf.Dataset``, default preset and ``ModelType.TRANSFORMER`` (its
  SmoothQuant), each run on OpenVINO and on ONNX Runtime;
- ONNX Runtime ``quantize_static`` (QDQ, Conv/MatMul/Gemm, per-channel weights, symmetric activations, MinMax) on the
  same calibration samples.

Metrics per row and step count against the FP32 images of the same noise: pooled PSNR (one MSE over all images),
median and worst image PSNR, same-digit rate (digit classifier on both images; text to image: prompt following, the
asked digit read back), quantize wall time. The section ``peers-<model>`` of docs/benchmarks.md is rewritten after
every row.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from common.errors import UserError
from engines.session import Session
from validation.image_metrics import psnr, psnr_per_image

PEER_PACKAGES = {"modelopt": "nvidia-modelopt", "nncf": "nncf"}
INSTALL_HINT = ".venv/bin/pip install -r requirements-peers.txt"
#: our best INT8 options on top of the command's defaults (which keep the time-embedding path float since issue 26):
#: the attention blocks' proj_in/proj_out float too (their top sensitivity on digits-t2i, docs/accuracy-notes.md)
BEST_EXCLUDE = ("*/conv_in/*", "*/conv_out/*", "*/time_embedding/*", "*/time_emb_proj/*", "*/proj_in/*", "*/proj_out/*")


def require_peers(modules: tuple[str, ...] = tuple(PEER_PACKAGES)) -> dict[str, str]:
    """Module -> installed version of each peer package; a UserError of one line saying how to install the
    missing ones."""
    versions, missing = {}, []
    for module in modules:
        try:
            versions[module] = importlib.import_module(module).__version__
        except ImportError:
            missing.append(PEER_PACKAGES.get(module, module))
    if missing:
        raise UserError(f"benchmarks.peers needs {', '.join(missing)}: install with `{INSTALL_HINT}`")
    return versions


@dataclass(frozen=True)
class Metrics:
    """One row at one step count: PSNR in dB against the FP32 images; ``digit``: same-digit rate or prompt
    following (0..1)."""

    pooled: float
    median: float
    worst: float
    digit: float


def row_metrics(images: np.ndarray, ref: np.ndarray, labels: np.ndarray, target: np.ndarray) -> Metrics:
    """Metrics of ``images`` (N×C×H×W in [0, 1]) against ``ref``: ``labels`` the digits read from ``images``,
    ``target`` the digits they should show (the FP32 images' digits, or the prompts' asked digits)."""
    if images.shape != ref.shape or labels.shape != target.shape or len(labels) != len(images):
        raise ValueError(f"shapes differ: images {images.shape}, ref {ref.shape}, labels {labels.shape}, "
                         f"target {target.shape}")
    per_image = psnr_per_image(images, ref)
    return Metrics(psnr(images, ref), float(np.median(per_image)), float(per_image.min()),
                   float(np.mean(labels == target)))


@dataclass(frozen=True)
class Built:
    """A quantized UNet ready to sample: ``open`` returns a fresh (not yet activated) Session, None when the row
    could not be built (``note`` says why in one line)."""

    label: str
    package: str
    seconds: float
    open: Callable[[], Session] | None
    note: str = ""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def table_row(b: Built, steps: int, m: Metrics | None) -> list[object]:
    """The markdown cells of row ``b`` at ``steps`` (a row that could not be built shows its note)."""
    if m is None:
        return [b.label, b.package, steps, "-", "-", "-", "-", f"{b.seconds:.0f}" if b.seconds else "-", b.note]
    return [b.label, b.package, steps, f"{m.pooled:.2f}", f"{m.median:.2f}", f"{m.worst:.2f}",
            f"{100 * m.digit:.0f}%", f"{b.seconds:.0f}", b.note]


def best_peer(rows: dict[str, Metrics], ours: str) -> tuple[str, str]:
    """(label of the best peer by pooled PSNR, label of the best peer by median PSNR) among ``rows`` except ours
    (labels starting with ``ours``)."""
    peers = {k: v for k, v in rows.items() if not k.startswith(ours)}
    if not peers:
        raise ValueError("no peer rows")
    return max(peers, key=lambda k: peers[k].pooled), max(peers, key=lambda k: peers[k].median)


# ------------------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class Subject:
    """What every row samples: the work folder, noise, conditioning and how to read digits."""

    model: Path
    work: Any  # WorkDir
    info: dict[str, Any]
    noise: np.ndarray
    cond: Any  # Conditioning | None
    clipped_eps: bool | None
    asked: np.ndarray | None  # text to image: the digit each prompt asks for
    prompts: tuple[str, ...]
    modelopt_calib_size: int = 32  # the example's --calib-size (smaller only for quick checks)
    threads: int = 1  # intra-op threads of every backend (torch, ONNX Runtime, OpenVINO)

    @property
    def text_to_image(self) -> bool:
        return self.info.get("text_to_image") is not None

    def images(self, session: Session, steps: int) -> np.ndarray:
        """Final images N×C×H×W in [0, 1] from ``noise`` through ``session`` (activated here)."""
        from pipelines.runner import sample_images
        from pipelines.schedulers import make_scheduler

        scheduler = make_scheduler("ddim", self.info["scheduler"])
        if not self.text_to_image:
            with session as s:
                return sample_images(s, scheduler, self.noise, steps, batch_size=64,
                                     use_clipped_model_output=self.clipped_eps).images
        from pipelines.text2image import open_text_to_image

        with open_text_to_image(self.work.root, self.info, session, scheduler, batch_size=32,
                                threads=self.threads) as t2i:
            images, _ = t2i.generate(self.cond, self.noise, steps, use_clipped_model_output=self.clipped_eps)
        return images


def prepare(model: Path, work_dir: Path, num: int) -> Subject:
    """Export ``model`` into ``work_dir`` once; noise of seeds 0..num-1; prompt i mod 60 for text to image."""
    from benchmarks.accuracy import ensure_export
    from pipelines.conditioning_inputs import ConditioningInputs, read_prompts, resolve_conditioning
    from pipelines.runner import seeded_noise
    from validation.digit_prompts import digit_in_prompt

    work = ensure_export(model, work_dir)
    info = work.load_export_info()
    noise = seeded_noise(tuple(info["inputs"]["sample"]["shape"][1:]), range(num))
    clipped = True if info["scheduler"].get("clip_sample") else None  # make demo: --use-clipped-model-output
    if info.get("text_to_image") is None:
        return Subject(model, work, info, noise, None, clipped, None, ())
    every = read_prompts(model / "prompts.txt")
    prompts = tuple(every[i % len(every)] for i in range(num))
    cond = resolve_conditioning(work.root, info, ConditioningInputs(prompts=prompts, guidance_scale=7.5))
    asked = np.array([digit_in_prompt(p) for p in prompts])
    return Subject(model, work, info, noise, cond, clipped, asked, prompts)


def digits(features: Any, images: np.ndarray) -> np.ndarray:
    """The digit the in-repo classifier reads in each image (colour images averaged to grey)."""
    return features.predict(images.mean(axis=1, keepdims=True) if images.shape[1] == 3 else images)


# ------------------------------------------------------------------------------------------------ our rows
def _cli(*args: object) -> None:
    from tools.__main__ import main

    code = main([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"python -m tools {' '.join(str(a) for a in args)} exited {code}")


def our_rows(subject: Subject, out_dir: Path) -> Iterator[Built]:
    """ours default (``calibrate`` + ``quantize`` defaults, the demo's calibration flags) and ours best."""
    from engines.ort_session import OrtSession

    work = subject.work.root
    flags: list[object] = ["--use-clipped-model-output"] if subject.clipped_eps else []
    if subject.text_to_image:
        flags += ["--prompts", subject.model / "prompts.txt"]
    start = time.perf_counter()
    _cli("calibrate", work, "--threads", subject.threads, *flags)
    calib = time.perf_counter() - start
    start = time.perf_counter()
    _cli("quantize", work)
    path = subject.work.int8_model("onnxruntime")
    yield Built(OURS_DEFAULT, "qdiff-trt", calib + time.perf_counter() - start,
                lambda: OrtSession(path, threads=subject.threads))
    best = out_dir / "ours_best.onnx"
    start = time.perf_counter()
    _cli("quantize", work, "--out", best, "--exclude", *BEST_EXCLUDE)
    yield Built("ours best (proj_in/proj_out float too)", "qdiff-trt", calib + time.perf_counter() - start,
                lambda: OrtSession(best, threads=subject.threads))


def our_fp8_rows(subject: Subject, out_dir: Path) -> Iterator[Built]:
    """OURS FP8 (issue 25): enable after its merge — ``quantize WORK --format fp8`` on the same ranges, its graph
    run on ONNX Runtime — and add ``ours-fp8`` to ``ROWS``. Nothing until then."""
    return iter(())


def calibration_samples(subject: Subject) -> list[Any]:
    """Our cached calibration samples of the default calibration (what NNCF and quantize_static are fed)."""
    from calibrators.calibrate import cached_samples_for
    from calibrators.ranges import TensorRanges

    samples = cached_samples_for(subject.work.calib_dir, TensorRanges.load(subject.work.ranges))
    if samples is None:
        raise RuntimeError("the default calibration's samples are not in calib/ (run the ours rows first)")
    return samples


def ort_static_rows(subject: Subject, out_dir: Path) -> Iterator[Built]:
    import onnxruntime

    from benchmarks.ort_baseline import ort_quantize_static
    from engines.ort_session import OrtSession

    out = out_dir / "ort_quantize_static.onnx"
    start = time.perf_counter()
    ort_quantize_static(subject.work.model, out, calibration_samples(subject), op_types=["Conv", "MatMul", "Gemm"],
                        symmetric_activations=True)
    yield Built("ORT quantize_static (Conv/MatMul/Gemm, per-channel, sym.)", f"onnxruntime {onnxruntime.__version__}",
                time.perf_counter() - start, lambda: OrtSession(out, threads=subject.threads))


def modelopt_rows(subject: Subject, out_dir: Path) -> Iterator[Built]:
    from benchmarks.peers_modelopt import modelopt_built

    yield from modelopt_built(subject, out_dir)


def nncf_rows(subject: Subject, out_dir: Path) -> Iterator[Built]:
    from benchmarks.peers_nncf import nncf_built

    yield from nncf_built(subject, calibration_samples(subject), out_dir)


#: row group -> builder; ``--rows`` picks groups (ours always runs first: the others reuse its calibration samples)
ROWS: dict[str, Callable[[Subject, Path], Iterator[Built]]] = {
    "ours": our_rows, "ours-fp8": our_fp8_rows, "modelopt": modelopt_rows, "nncf": nncf_rows,
    "ort": ort_static_rows,
}


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    p.add_argument("--work", type=Path, default=None, help="work folder (default work/peers-<model name>)")
    p.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100])
    p.add_argument("--num", type=int, default=64, help="images (seeds 0..num-1)")
    p.add_argument("--rows", nargs="+", default=["ours", "modelopt", "nncf", "ort"], choices=list(ROWS))
    p.add_argument("--modelopt-calib-size", type=int, default=32,
                   help="ModelOpt calibration images (the example's --calib-size 32; fewer only for quick checks)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of torch, ONNX Runtime and OpenVINO (default 1: on shared, busy cores two "
                        "spinning threads ran a torch UNet call 30x slower than one)")
    p.add_argument("--section", default=None, help="docs/benchmarks.md section (default peers-<model name>)")
    args = p.parse_args(argv)
    try:
        versions = require_peers(tuple(m for m in PEER_PACKAGES if m in args.rows))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    name = args.model.name
    work_dir = args.work or REPO / "work" / f"peers-{name}"
    section = args.section or f"peers-{name}"
    command = command_line("benchmarks.peers", argv)
    subject = replace(prepare(args.model, work_dir, args.num), modelopt_calib_size=args.modelopt_calib_size,
                      threads=args.threads)
    from validation.digit_classifier import DigitFeatures

    features = DigitFeatures(REPO / "models" / "digit-classifier")
    out_dir = subject.work.root / "peers"
    out_dir.mkdir(exist_ok=True)
    built: list[Built] = []
    for group in ["ours", *[r for r in args.rows if r != "ours"]]:
        try:
            for b in ROWS[group](subject, out_dir):
                built.append(b)
                print(f"built {b.label} ({b.package}) in {b.seconds:.0f} s {b.note}", flush=True)
        except Exception as exc:  # a peer that fails to build is a row with its error, not the end of the run
            built.append(Built(f"{group} (failed)", "", 0.0, None, one_line(exc)))
            print(f"{group} failed: {one_line(exc)}", flush=True)
    load_start = os.getloadavg()[0]
    results: dict[str, dict[str, float]] = {}
    rows: list[list[object]] = []
    fp32_digit: dict[int, float] = {}
    measured: dict[int, dict[str, Metrics]] = {}
    for steps in args.steps:
        from engines.ort_session import OrtSession

        ref = subject.images(OrtSession(subject.work.model, threads=subject.threads), steps)
        ref_digits = digits(features, ref)
        target = subject.asked if subject.asked is not None else ref_digits
        fp32_digit[steps] = float(np.mean(ref_digits == target))
        at_steps = measured.setdefault(steps, {})
        for b in built:
            m = None
            if b.open is not None:
                try:
                    img = subject.images(b.open(), steps)
                    m = row_metrics(img, ref, digits(features, img), target)
                    at_steps[b.label] = m
                    results[f"{b.label} @ {steps}"] = m.__dict__
                except Exception as exc:
                    b = Built(b.label, b.package, b.seconds, None, one_line(exc))
            rows.append(table_row(b, steps, m))
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
            (subject.work.root / f"{section}.json").write_text(json.dumps(results, indent=1))
            write_section(section, section_body(args, command, subject, versions, load_start, fp32_digit, rows,
                                                margins(measured)))
    return 0


OURS_DEFAULT = "ours default (calibrate + quantize defaults)"


def margins(measured: dict[int, dict[str, Metrics]]) -> list[list[object]]:
    """Per step count: our default against the best peer by pooled and by median PSNR (dB, ours minus theirs)."""
    out: list[list[object]] = []
    for steps, at in measured.items():
        if OURS_DEFAULT not in at or len(at) < 2 or all(k.startswith("ours") for k in at):
            continue
        ours, (pooled, median) = at[OURS_DEFAULT], best_peer(at, "ours")
        out.append([steps, f"{ours.pooled:.2f}", f"{pooled}: {at[pooled].pooled:.2f}",
                    f"{ours.pooled - at[pooled].pooled:+.2f}", f"{ours.median:.2f}",
                    f"{median}: {at[median].median:.2f}", f"{ours.median - at[median].median:+.2f}"])
    return out


def section_body(args: argparse.Namespace, command: str, subject: Subject, versions: dict[str, str],
                 load_start: float, fp32_digit: dict[int, float], rows: list[list[object]],
                 margin_rows: list[list[object]]) -> str:
    import onnxruntime
    import openvino
    import torch

    model = args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model
    digit = "prompt following" if subject.text_to_image else "same digit"
    return "\n".join([
        *section_head(f"Peers with the real libraries: `{model}` ({args.num} seeds, DDIM)", command,
                      f"1-minute load average {load_start:.1f} at the start of sampling, {os.getloadavg()[0]:.1f} "
                      "now; "),
        f"- Versions: torch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}, OpenVINO "
        f"{openvino.__version__.split('-')[0]}, " + ", ".join(f"{PEER_PACKAGES[k]} {v}" for k, v in versions.items())
        + "; installed with `" + INSTALL_HINT + "` (benchmarks/peers.py docstring).",
        "- Sampling: " + ("DDIM, `clip_sample` true with `use_clipped_model_output=True` (as `make demo`)"
                          if subject.clipped_eps else "DDIM as the scheduler config says")
        + (f", guidance 7.5, image i with prompt i mod {len(set(subject.prompts))} of `prompts.txt`"
           if subject.text_to_image else "") + "; image i from seed i; the FP32 reference is ONNX Runtime FP32.",
        f"- {digit} of the FP32 images: " + ", ".join(f"{s} steps {100 * v:.0f}%" for s, v in fp32_digit.items())
        + ("" if subject.text_to_image else " (by definition)") + ".",
        "- Rows: benchmarks/peers.py docstring. ModelOpt rows: the diffusers example's filter and calibration (32 "
        "trajectories × 20 steps, 2 images per call), on the model's own trajectories; `PyTorch` = the "
        "fake-quantized module, `ONNX on ORT` = its `torch.onnx.export` on ONNX Runtime. NNCF rows: "
        "`nncf.quantize` on our `model.onnx` with our calibration samples. quantize s: wall time of calibration "
        "and quantization (ours: `calibrate` + `quantize`).",
        "- PSNR dB against the FP32 images of the same noise: pooled = one MSE over all images; median and worst "
        "image.",
        "",
        markdown_table(["row", "package", "steps", "pooled PSNR", "median PSNR", "worst image", digit,
                        "quantize s", "note"], rows),
        "",
        "Our default against the best peer row (any package, any backend) at each step count, dB:",
        "",
        markdown_table(["steps", "ours pooled", "best peer pooled", "margin", "ours median", "best peer median",
                        "margin"], margin_rows),
    ])


if __name__ == "__main__":
    sys.exit(main())
