"""UNet step latency on the CPU, side by side in one run: PyTorch eager FP32, ONNX Runtime FP32, our INT8
(``onnxruntime`` target), our INT8 convolutions + blocked INT4 MatMul/Gemm (MatMulNBits), and ONNX Runtime's ``quantize_static`` (all ops, and Conv/MatMul/Gemm only).

    python -m benchmarks.speed [--arch ddpm-cifar10] [--model models/digits-ddpm] [--batches 1 8] [--repeats 15]
    python -m benchmarks.speed --openvino --core-rows --threads 1 2 --batches 8 --section speed-cpu-backends

``--openvino`` adds OpenVINO rows (FP32, our INT8 graphs of both targets and the ``--reduce-range pairs`` graph,
``INFERENCE_PRECISION_HINT`` f32); our INT8 graph also runs with ONNX Runtime's saturating U8S8 kernels
(``session.x64quantprecision`` 0) to show what the exact default costs on CPUs without VNNI;
``--core-rows`` keeps only ONNX Runtime FP32, our INT8 on ONNX Runtime and the OpenVINO rows; ``--threads`` takes
several counts (a sweep; 0 = all cores), each timed in its own interleaved rounds.

Every model gets one UNet call per round, rounds interleaved, so machine noise hits all rows alike; medians over
the rounds (PyTorch eager is timed in its own block after the ONNX Runtime rounds). Activation ranges for the INT8 models come from a short NDTC calibration (their values do not change
the speed); threads: all cores.
"""

from __future__ import annotations

import os

# PyTorch's OpenMP threads keep spinning after each call; passive waiting keeps them off the cores while ONNX Runtime
# runs (set before torch is first imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import collections
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from calibrators.aggregation import AggregationConfig
from calibrators.calibrate import CalibrateConfig, calibrate, generate_samples
from quantization.qdq_rules import calibration_tensors
from calibrators.estimators import EstimatorConfig
from calibrators.sources import SourceConfig
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from engines.openvino_session import OpenVinoSession
from engines.ort_session import OrtSession, session_options
from quantization.quantize import quantize
from quantization.qdq_policy import QDQPolicy
from quantization.weight_memory import weight_memory


TRT_GRAPH = "ours INT8 (tensorrt target)"
PAIRS_GRAPH = "ours INT8 (onnxruntime target, --reduce-range pairs)"
OURS = "ours INT8 (onnxruntime target)"
# ONNX Runtime's U8S8 kernels without the exact-U8U8 session option: what that option costs on CPUs without VNNI
U8S8 = "ours INT8 (onnxruntime target), x64quantprecision 0 (saturating)"
CORE = ("ORT FP32", OURS, U8S8)
OPENVINO = {"OpenVINO FP32": "ORT FP32", "OpenVINO ours INT8 (onnxruntime target)": OURS,
            "OpenVINO ours INT8 (tensorrt target)": TRT_GRAPH,
            "OpenVINO ours INT8 (onnxruntime target, --reduce-range pairs)": PAIRS_GRAPH}
NOT_ON_ORT = (TRT_GRAPH, PAIRS_GRAPH)  # ONNX Runtime runs the tensorrt graph unfused; pairs times as ours


def open_rows(paths: dict[str, Path], threads: int, openvino: bool, core_rows: bool,
              cache: Path) -> dict[str, Any]:
    """Active sessions by row label: ONNX Runtime on every prepared model (but the tensorrt-target graph, which it
    runs unfused in float), or only CORE; plus the OpenVINO rows."""
    rows: dict[str, Any] = {k: OrtSession(p, options=session_options(threads)).activate() for k, p in paths.items()
                            if k not in NOT_ON_ORT and (not core_rows or k in CORE)}
    rows[U8S8] = OrtSession(paths[OURS], options=session_options(threads, exact_u8s8=False)).activate()
    if openvino:
        rows.update({k: OpenVinoSession(paths[src], threads=threads, cache_dir=cache).activate()
                     for k, src in OPENVINO.items()})
    return rows


def prepare(work: WorkDir, source: list[str], calib_samples: int, core_rows: bool = False) -> dict[str, Path]:
    """Export (once), calibrate briefly, and write the INT8 variants (``core_rows``: only our two targets); returns
    label -> ONNX path."""
    from benchmarks.ort_baseline import ort_quantize_static
    from tools.__main__ import main as cli

    if not work.export_json.is_file():
        assert cli(["export", *source, str(work.root), "--force"]) == 0
    info = work.load_export_info()
    cfg = CalibrateConfig(SourceConfig(method="ndtc", samples=calib_samples, steps=20),
                          EstimatorConfig("max"), AggregationConfig("global"))
    ranges = calibrate(work, cfg, calibration_tensors, progress=False)
    samples = generate_samples(work, info, cfg, onnx_model_sha256(work.model), progress=False)
    out = work.root / "speed-models"
    out.mkdir(exist_ok=True)
    paths = {"ORT FP32": work.model}
    ours = out / "ours_int8.onnx"
    onnx.save(quantize(onnx.load(str(work.model)), ranges, QDQPolicy(target="onnxruntime"))[0], str(ours))
    paths[OURS] = ours
    pairs = out / "ours_int8_pairs.onnx"
    policy = QDQPolicy(target="onnxruntime", reduce_range="pairs")
    onnx.save(quantize(onnx.load(str(work.model)), ranges, policy)[0], str(pairs))
    paths[PAIRS_GRAPH] = pairs
    trt = out / "ours_int8_trt.onnx"
    onnx.save(quantize(onnx.load(str(work.model)), ranges, QDQPolicy(target="tensorrt"))[0], str(trt))
    paths[TRT_GRAPH] = trt
    if core_rows:
        return paths
    w4 = out / "ours_int8_conv_int4_linear.onnx"
    policy = QDQPolicy(target="onnxruntime", weight_bits=4, int4_scope="linear")
    onnx.save(quantize(onnx.load(str(work.model)), ranges, policy)[0], str(w4))
    paths["ours INT8 conv + INT4 linear (MatMulNBits)"] = w4
    for label, ops in (("ORT quantize_static (all ops)", None), ("ORT quantize_static (Conv/MatMul/Gemm)",
                                                                  ["Conv", "MatMul", "Gemm"])):
        path = out / ("static_all.onnx" if ops is None else "static_cmg.onnx")
        ort_quantize_static(work.model, path, samples, op_types=ops, symmetric_activations=ops is not None)
        paths[label] = path
    return paths


def torch_model(work: WorkDir, source: list[str]) -> Any:
    """The PyTorch UNet the work folder was exported from (eager, FP32)."""
    from exporter.architectures import build_random_unet, get_architecture
    from exporter.loading import load_unet, locate_model

    if source[0] == "--arch":
        return build_random_unet(get_architecture(source[1]))
    return load_unet(locate_model(Path(source[1])))


def bench(work: WorkDir, source: list[str], paths: dict[str, Path], batches: list[int], repeats: int,
          threads: int, openvino: bool = False, core_rows: bool = False) -> list[list[object]]:
    """Rows [model, batch, threads, label, median ms, speed-up over ORT FP32, weight MiB] of the prepared ``paths``."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    info = work.load_export_info()
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    unet = None if core_rows else torch_model(work, source)
    rows: list[list[object]] = []
    mib = {k: weight_memory(onnx.load(str(p))).total / 2**20 for k, p in paths.items()}
    mib.update({k: mib[src] for k, src in OPENVINO.items()})
    mib[U8S8] = mib[OURS]
    for batch in batches:
        rng = np.random.default_rng(0)
        feeds = {"sample": rng.standard_normal((batch, c, h, w)).astype(np.float32),
                 "timestep": np.full(batch, 500.0, np.float32)}
        sessions = open_rows(paths, threads, openvino, core_rows, work.root / ".openvino_cache")
        xt = (torch.from_numpy(feeds["sample"]), torch.from_numpy(feeds["timestep"]))
        runs: dict[str, Any] = {k: (lambda s=s: s.run(feeds)) for k, s in sessions.items()}
        times: dict[str, list[float]] = collections.defaultdict(list)
        # ONNX Runtime models interleaved round by round; PyTorch timed in its own block afterwards, so its OpenMP
        # threads (which keep spinning after each call) never steal the cores from an ONNX Runtime run.
        for fn in runs.values():
            fn()
        for _ in range(repeats):
            for label, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
        with torch.no_grad():
            for i in range(repeats + 1 if unet is not None else 0):  # the first call is the warm-up
                start = time.perf_counter()
                unet(*xt)  # type: ignore[misc]
                if i == 0:
                    continue
                times["PyTorch eager FP32"].append(time.perf_counter() - start)
        base = statistics.median(times["ORT FP32"])
        for label in times:  # ONNX Runtime rows in run order, then PyTorch
            med = statistics.median(times[label])
            size = mib.get(label, mib["ORT FP32"])
            rows.append([work.root.name, batch, threads or "all", label, f"{1000 * med:.1f}", f"{base / med:.2f}x",
                         f"{size:.2f}"])
            print(f"{work.root.name:14s} batch {batch:2d} threads {threads}  {label:45s} {1000 * med:8.1f} ms  "
                  f"{base / med:5.2f}x", flush=True)
        for s in sessions.values():
            s.deactivate()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="ddpm-cifar10")
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--calib-samples", type=int, default=32)
    p.add_argument("--threads", type=int, nargs="+", default=[2], help="intra-op thread counts (0 = all cores)")
    p.add_argument("--openvino", action="store_true", help="add the OpenVINO rows")
    p.add_argument("--core-rows", action="store_true", help="only ORT FP32, our INT8 on ORT and the OpenVINO rows")
    p.add_argument("--reuse-models", action="store_true",
                   help="with --core-rows: time the INT8 models an earlier run wrote to WORK/speed-models (their ranges "
                        "do not change the speed) instead of calibrating again")
    p.add_argument("--section", default="speed")
    args = p.parse_args(argv)
    command = command_line("benchmarks.speed", argv)
    rows = []
    load = []
    for name, source in ((args.arch, ["--arch", args.arch]), ("digits-ddpm", ["--model", str(args.model)])):
        work = WorkDir(REPO / "work" / f"speed-{name}")
        models = work.root / "speed-models"
        paths = {"ORT FP32": work.model, OURS: models / "ours_int8.onnx", TRT_GRAPH: models / "ours_int8_trt.onnx",
                 PAIRS_GRAPH: models / "ours_int8_pairs.onnx"}
        if not (args.reuse_models and args.core_rows and all(p.is_file() for p in paths.values())):
            paths = prepare(work, source, args.calib_samples, args.core_rows)
        for threads in args.threads:
            load.append(os.getloadavg()[0])
            rows += bench(work, source, paths, args.batches, args.repeats, threads, args.openvino, args.core_rows)
    load.append(os.getloadavg()[0])
    body = "\n".join([
        *section_head("Speed: UNet step latency on the CPU (one call, median)", command,
                      f"threads {', '.join(str(t or 'all') for t in args.threads)}; 1-minute load average "
                      f"{min(load):.1f}-{max(load):.1f} during the run (a shared machine: ratios are side by side); "),
        f"- {args.repeats} rounds, ONNX Runtime and OpenVINO sessions interleaved within each round (PyTorch, when "
        "timed, in its own block after them); speed-up relative to ONNX Runtime FP32 of the same batch.",
        "",
        "- weight MiB: bytes of the model's initializers (PyTorch: the FP32 model's).",
        "",
        markdown_table(["model", "batch", "threads", "backend", "median ms", "vs ORT FP32", "weight MiB"], rows),
    ])
    write_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
