"""GPU benchmark: FP16 vs INT8 TensorRT engines, with and without CUDA graphs, over a DDIM denoising loop.

    python -m benchmarks.gpu_bench WORK [--precisions fp16 int8] [--steps 50] [--batch 1] [--runs 5]

Needs the engines ``WORK/model.fp16.plan`` and ``WORK/model.int8.plan`` (python -m tools build WORK --precision ...)
and runs where they were built (the Docker image on a GPU, or a Jetson). For each engine and CUDA-graph setting it
runs ``--warmup`` untimed loops, then ``--runs`` timed loops of ``--steps`` DDIM steps through DenoiseRunner, and
reports the median (and p90) UNet call latency over all steps of all runs and the median end-to-end loop time.
Latency is host wall time of ``TrtSession.run`` (host->device copy, execution, device->host copy), as the loop sees
it. Results: printed as Markdown table rows for docs/benchmarks.md and written to WORK/report/gpu_bench.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from common.atomic import write_json
from common.errors import UserError
from common.workdir import WorkDir
from pipelines.conditioning import Conditioning
from pipelines.runner import DenoiseRunner
from pipelines.schedulers import make_scheduler
from engines.tensorrt.plan import PRECISIONS, plan_path, read_plan_info
from engines.tensorrt.session import TrtSession
from tools.cli_parser import check_at_least_one

HEADER = ("| engine | CUDA graph | batch | steps | UNet call median (ms) | p90 (ms) | end-to-end median (s) | "
          "runs | TensorRT | GPU |\n|---|---|---|---|---|---|---|---|---|---|")


class TimedSession:
    """A Session wrapper that records the wall time of every ``run`` call."""

    def __init__(self, inner: TrtSession) -> None:
        self.inner = inner
        self.calls: list[float] = []

    @property
    def input_names(self) -> list[str]:
        return self.inner.input_names

    @property
    def output_names(self) -> list[str]:
        return self.inner.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.inner.run(feeds)
        self.calls.append(time.perf_counter() - start)
        return out

    def __enter__(self) -> TimedSession:
        self.inner.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.inner.deactivate()


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work", type=Path)
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=1, help="images per loop (x2 UNet rows with guidance)")
    p.add_argument("--runs", type=int, default=5, help="timed loops per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed loops first (CUDA-graph capture happens here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON results (default WORK/report/gpu_bench.json)")
    args = p.parse_args(argv)
    check_at_least_one(args, "steps", "batch", "runs")
    if args.warmup < 0:
        raise UserError("--warmup must be >= 0")
    return args


def bench_one(work: WorkDir, info: dict[str, Any], precision: str, cuda_graph: bool,
              args: argparse.Namespace) -> dict[str, Any]:
    """Time one engine with one CUDA-graph setting; a row of results."""
    plan = plan_path(work.root, precision)
    meta = read_plan_info(plan)
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    cond = None
    spec = info["inputs"].get("encoder_hidden_states")
    if spec is not None:
        _, length, dim = spec["shape"]
        emb = np.random.default_rng(args.seed).standard_normal((1, length, dim)).astype(np.float32)
        cond = Conditioning(emb, np.zeros_like(emb), 7.5)
    session = TimedSession(TrtSession(plan, cuda_graph=cuda_graph))
    loops: list[float] = []
    with session:
        runner = DenoiseRunner(session, make_scheduler("ddim", info["scheduler"]), batch_size=args.batch)
        noise = runner.initial_noise((args.batch, c, h, w), args.seed)
        for _ in range(args.warmup):
            runner.sample(noise, args.steps, seed=args.seed, cond=cond)
        session.calls.clear()
        for _ in range(args.runs):
            start = time.perf_counter()
            runner.sample(noise, args.steps, seed=args.seed, cond=cond)
            loops.append(time.perf_counter() - start)
    calls_ms = sorted(1000 * t for t in session.calls)
    return {
        "engine": plan.name, "precision": precision, "cuda_graph": cuda_graph, "batch": args.batch,
        "steps": args.steps, "runs": args.runs, "warmup": args.warmup,
        "unet_call_ms_median": round(statistics.median(calls_ms), 3),
        "unet_call_ms_p90": round(calls_ms[min(len(calls_ms) - 1, int(0.9 * len(calls_ms)))], 3),
        "end_to_end_s_median": round(statistics.median(loops), 4),
        "tensorrt": meta.tensorrt_version, "gpu": meta.gpu.name,
    }


def table_row(r: dict[str, Any]) -> str:
    return (f"| {r['precision']} | {'yes' if r['cuda_graph'] else 'no'} | {r['batch']} | {r['steps']} | "
            f"{r['unet_call_ms_median']} | {r['unet_call_ms_p90']} | {r['end_to_end_s_median']} | {r['runs']} | "
            f"{r['tensorrt']} | {r['gpu']} |")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    for precision in args.precisions:
        read_plan_info(plan_path(work.root, precision))  # fail before any timing when an engine is missing
    rows = [bench_one(work, info, p, g, args) for p in args.precisions for g in (False, True)]
    out = args.out or work.report_dir / "gpu_bench.json"
    write_json(out, {"command": "python -m benchmarks.gpu_bench " + " ".join(argv or []), "results": rows})
    print(HEADER)
    for r in rows:
        print(table_row(r))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    import sys

    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
