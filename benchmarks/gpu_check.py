"""GPU check: what the GPU paths compute and how fast one UNet call is, on one NVIDIA GPU in a few minutes.

    python -m benchmarks.gpu_check WORK [--images 8] [--steps 50] [--batch 8] [--runs 50] [--write-doc]

WORK is an exported work folder (the reference model: ``make demo`` leaves work/digits-ddpm), quantized with
``--target tensorrt`` for the INT8 rows. Two tables, every row measured in this one run; a row that cannot run here
says why (a missing file, TensorRT not installed) instead of a number:

* Accuracy, PSNR of the final images against the CPU FP32 loop (ONNX Runtime's CPU provider, DDIM ``--steps``,
  clipped eps, ``--images`` seeds): the FP16 rewrite (``engines.tensorrt.fp16_convert``) and the tensorrt-target INT8 graph
  with its FP16 rewrite (exactly what a TensorRT INT8 build is made from) on the CUDA provider (TF32 off); the
  TensorRT FP16/INT8 engines ``WORK/model.<precision>.plan`` when TensorRT and the engines are here.
* Latency of one UNet call at ``--batch`` images (median over ``--runs`` after warm-up, the device synchronized
  around each call): ONNX Runtime CUDA FP32 and FP16, host arrays (``run``) and CUDA tensors through IO binding
  (``run_tensors``); PyTorch FP16 eager and replayed as a CUDA graph, the baseline a user would otherwise run
  (diffusers' class of the exported model from its config: random weights, same architecture and cost); the
  TensorRT engines with and without CUDA graphs.

Without CUDA (or without onnxruntime-gpu's CUDA provider) it exits 2 saying so. Results go to
WORK/report/gpu_check.json; ``--write-doc`` writes the tables into docs/benchmarks.md (section gpu-check).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import command_line, markdown_table, section_head, write_section
from common.atomic import write_json
from common.errors import UserError, first_line
from common.workdir import WorkDir
from engines.ort_session import OrtSession
from pipelines.runner import DenoiseRunner, to_images
from pipelines.schedulers import make_scheduler
from pipelines.tensor_runner import TensorDenoiseRunner
from validation.image_metrics import psnr

CUDA_FP32 = ("CUDAExecutionProvider", {"use_tf32": "0"})
NEEDS_CUDA = ("benchmarks.gpu_check needs CUDA: an NVIDIA GPU visible to torch and onnxruntime-gpu's "
              "CUDAExecutionProvider (pip install -r requirements-gpu.txt, or the Docker image)")


def require_cuda() -> Any:
    """torch with a CUDA device and ONNX Runtime's CUDA provider, or the UserError NEEDS_CUDA (exit 2)."""
    try:
        import onnxruntime as ort
        import torch
    except ImportError as exc:
        raise UserError(f"{NEEDS_CUDA} ({exc})") from exc
    if not torch.cuda.is_available():
        raise UserError(f"{NEEDS_CUDA} (no CUDA device visible to torch {torch.__version__})")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError(f"{NEEDS_CUDA} (ONNX Runtime providers here: {ort.get_available_providers()})")
    return torch


class _Row:
    """One table row: a value, or the reason it could not be measured."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.value: float | None = None
        self.note = ""

    def run(self, fn: Callable[[], float]) -> _Row:
        try:
            self.value = fn()
        except UserError as exc:
            self.note = f"not run: {exc}"
        except Exception as exc:  # a row that fails must not hide the others; its first line is reported
            self.note = f"failed: {type(exc).__name__}: {first_line(exc, 200)}"
        return self

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "note": self.note}


# --- accuracy ------------------------------------------------------------------------------------------------------
def _ddim(work: WorkDir, runner_for: Callable[[Any], Any], noise: np.ndarray, steps: int) -> np.ndarray:
    """Final images of the DDIM loop ``runner_for(scheduler)`` builds, from ``noise``."""
    scheduler = make_scheduler("ddim", work.load_export_info()["scheduler"])
    return to_images(runner_for(scheduler).sample(noise, steps, seed=0, use_clipped_model_output=True))


def accuracy_rows(work: WorkDir, images: int, steps: int, tmp: Path) -> list[_Row]:
    from engines.tensorrt.fp16_convert import convert_file

    c, h, w = work.load_export_info()["inputs"]["sample"]["shape"][1:]
    with OrtSession(work.model, providers=["CPUExecutionProvider"]) as cpu:
        noise = DenoiseRunner(cpu, None).initial_noise((images, c, h, w), seed=0)
        reference = _ddim(work, lambda s: DenoiseRunner(cpu, s, batch_size=images), noise, steps)

    def on_cuda(onnx_path: Path) -> float:
        with OrtSession(onnx_path, providers=[CUDA_FP32]) as gpu:
            if gpu.active_providers[0] != "CUDAExecutionProvider":
                raise UserError(f"ONNX Runtime runs it on {gpu.active_providers}, not CUDA")
            out = _ddim(work, lambda s: TensorDenoiseRunner(gpu, s, "cuda", images), noise, steps)
        return psnr(reference, out)

    def fp16_rewrite() -> float:
        convert_file(work.model, tmp / "model.fp16.onnx")
        return on_cuda(tmp / "model.fp16.onnx")

    def int8_fp16() -> float:
        source = work.model_for("int8", "tensorrt")
        convert_file(source, tmp / "model.int8.trt.fp16.onnx")
        return on_cuda(tmp / "model.int8.trt.fp16.onnx")

    def engine(precision: str) -> Callable[[], float]:
        def run() -> float:
            from engines.tensorrt.plan import plan_path, require_tensorrt
            from engines.tensorrt.session import TrtSession

            require_tensorrt()
            plan = plan_path(work.root, precision)
            if not plan.is_file():
                raise UserError(f"no {plan.name}: python -m tools build {work.root} --precision {precision}")
            with TrtSession(plan) as session:
                out = _ddim(work, lambda s: TensorDenoiseRunner(session, s, "cuda", images), noise, steps)
            return psnr(reference, out)
        return run

    return [_Row("FP16 rewrite, ONNX Runtime CUDA").run(fp16_rewrite),
            _Row("tensorrt-target INT8 + FP16 rewrite, ONNX Runtime CUDA").run(int8_fp16),
            _Row("TensorRT FP16 engine").run(engine("fp16")),
            _Row("TensorRT INT8 engine").run(engine("int8"))]


# --- latency -------------------------------------------------------------------------------------------------------
def _median_ms(torch: Any, fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def latency_rows(torch: Any, work: WorkDir, batch: int, runs: int, tmp: Path) -> list[_Row]:
    from engines.tensorrt.fp16_convert import convert_file

    info = work.load_export_info()
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    rng = np.random.default_rng(0)
    host = {"sample": rng.standard_normal((batch, c, h, w)).astype(np.float32),
            "timestep": np.full((batch,), 500.0, np.float32)}
    if "encoder_hidden_states" in info["inputs"]:
        length, dim = info["inputs"]["encoder_hidden_states"]["shape"][1:]
        host["encoder_hidden_states"] = rng.standard_normal((batch, length, dim)).astype(np.float32)
    device = {k: torch.from_numpy(v).cuda() for k, v in host.items()}

    def ort(onnx_path: Callable[[], Path], tensors: bool) -> Callable[[], float]:
        def run() -> float:
            with OrtSession(onnx_path(), providers=[CUDA_FP32]) as s:
                if s.active_providers[0] != "CUDAExecutionProvider":
                    raise UserError(f"ONNX Runtime runs it on {s.active_providers}, not CUDA")
                call = (lambda: s.run_tensors(device)) if tensors else (lambda: s.run(host))
                return _median_ms(torch, call, runs)
        return run

    def fp16_path() -> Path:
        path = tmp / "model.fp16.onnx"
        if not path.is_file():
            convert_file(work.model, path)
        return path

    def torch_unet(graph: bool) -> Callable[[], float]:
        def run() -> float:
            import diffusers

            unet = getattr(diffusers, info["model_class"]).from_config(info["unet_config"])
            unet = unet.to("cuda", torch.float16).eval()
            args = {k: v.half() if k != "timestep" else v for k, v in device.items()}
            sample, t = args.pop("sample"), args.pop("timestep")

            def call() -> Any:
                return unet(sample, t, **args).sample

            with torch.inference_mode():
                if not graph:
                    return _median_ms(torch, call, runs)
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        call()
                torch.cuda.current_stream().wait_stream(stream)
                cuda_graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(cuda_graph):
                    call()
                return _median_ms(torch, cuda_graph.replay, runs)
        return run

    def engine(precision: str, graph: bool) -> Callable[[], float]:
        def run() -> float:
            from engines.tensorrt.plan import plan_path, require_tensorrt
            from engines.tensorrt.session import TrtSession

            require_tensorrt()
            plan = plan_path(work.root, precision)
            if not plan.is_file():
                raise UserError(f"no {plan.name}: python -m tools build {work.root} --precision {precision}")
            with TrtSession(plan, cuda_graph=graph) as s:
                return _median_ms(torch, lambda: s.run_tensors(device), runs)
        return run

    return [_Row("ONNX Runtime CUDA FP32, host arrays").run(ort(lambda: work.model, False)),
            _Row("ONNX Runtime CUDA FP32, IO binding (CUDA tensors)").run(ort(lambda: work.model, True)),
            _Row("ONNX Runtime CUDA FP16 rewrite, host arrays").run(ort(fp16_path, False)),
            _Row("ONNX Runtime CUDA FP16 rewrite, IO binding").run(ort(fp16_path, True)),
            _Row("PyTorch FP16 eager").run(torch_unet(False)),
            _Row("PyTorch FP16 CUDA graph").run(torch_unet(True)),
            _Row("TensorRT FP16 engine").run(engine("fp16", False)),
            _Row("TensorRT FP16 engine, CUDA graph").run(engine("fp16", True)),
            _Row("TensorRT INT8 engine").run(engine("int8", False)),
            _Row("TensorRT INT8 engine, CUDA graph").run(engine("int8", True))]


# --- report --------------------------------------------------------------------------------------------------------
def render(accuracy: list[_Row], latency: list[_Row], args: argparse.Namespace, gpu: str, versions: str,
           command: str) -> str:
    lines = section_head("GPU check: FP16/INT8 graphs on the CUDA provider, UNet-call latency", command,
                         f"GPU {gpu}; {versions}; ")
    lines += ["", f"PSNR of {args.images} images, DDIM {args.steps} steps (clipped eps), against the CPU FP32 loop:",
              "", markdown_table(["graph", "PSNR (dB)", "note"],
                                 [[r.name, "" if r.value is None else f"{r.value:.2f}", r.note] for r in accuracy]),
              "", f"One UNet call at batch {args.batch}, median of {args.runs} after warm-up:", "",
              markdown_table(["path", "ms", "note"],
                             [[r.name, "" if r.value is None else f"{r.value:.3f}", r.note] for r in latency])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work", type=Path)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--write-doc", action="store_true", help="write the tables into docs/benchmarks.md")
    args = p.parse_args(argv)
    try:
        torch = require_cuda()
        work = WorkDir(args.work)
        work.load_export_info()
        import onnxruntime as ort

        gpu = torch.cuda.get_device_name(0)
        versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}, onnxruntime {ort.__version__}"
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            accuracy = accuracy_rows(work, args.images, args.steps, Path(tmp))
            latency = latency_rows(torch, work, args.batch, args.runs, Path(tmp))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = command_line("benchmarks.gpu_check", argv)
    body = render(accuracy, latency, args, gpu, versions, command)
    print(body)
    work.report_dir.mkdir(parents=True, exist_ok=True)
    write_json(work.report_dir / "gpu_check.json", {
        "command": command, "gpu": gpu, "versions": versions, "images": args.images, "steps": args.steps,
        "batch": args.batch, "runs": args.runs, "accuracy_psnr_db": [r.to_json() for r in accuracy],
        "latency_ms": [r.to_json() for r in latency]})
    if args.write_doc:
        write_section("gpu-check", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
