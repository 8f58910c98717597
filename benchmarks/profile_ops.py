"""Where the time goes: ONNX Runtime's profiler on the FP32 and our INT8 model, time per operator type.

    python -m benchmarks.profile_ops [--work work/speed-ddpm-cifar10] [--batch 8] [--runs 5]

Uses the models `benchmarks.speed` prepared. Kernel times are summed per op type over ``--runs`` runs (after one
warm-up) and divided by the runs; shares are of the summed kernel time.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, command_line, machine, markdown_table, today, write_section
from common.workdir import WorkDir
from engines.ort_session import session_options


def profile(path: Path, feeds: dict[str, np.ndarray], runs: int, threads: int) -> collections.Counter[str]:
    """Microseconds per run of each op type."""
    return per_run_by(kernel_events(path, feeds, runs, threads), runs, lambda e: e["args"]["op_name"])


def per_run_by(events: list[dict[str, Any]], runs: int, key: Callable[[dict[str, Any]], str]) -> collections.Counter[str]:
    """Kernel microseconds per run of ``events`` summed by ``key(event)`` (the warm-up run is in the trace too)."""
    out: collections.Counter[str] = collections.Counter()
    for e in events:
        out[key(e)] += e["dur"] / (runs + 1)
    return out


def kernel_events(path: Path, feeds: dict[str, np.ndarray], runs: int, threads: int) -> list[dict[str, Any]]:
    """ONNX Runtime profiler events of every node kernel over one warm-up run and ``runs`` runs (``dur`` in
    microseconds; ``args`` has ``op_name`` and ``output_type_shape``)."""
    import onnxruntime as ort

    so = session_options(threads, profile=True)
    so.profile_file_prefix = str(Path("/tmp") / "qdiff_profile")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    for _ in range(runs):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    return [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]


def random_feeds(info: dict, batch: int, t: float = 500.0) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """Seeded N(0, 1) UNet input of ``batch`` rows at time step ``t`` for an unconditional export (``export.json``)."""
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    rng = np.random.default_rng(0)
    return {"sample": rng.standard_normal((batch, c, h, w)).astype(np.float32),
            "timestep": np.full(batch, t, np.float32)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "work" / "speed-ddpm-cifar10")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    command = command_line("benchmarks.profile_ops", argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    feeds = random_feeds(info, args.batch)
    fp32 = profile(work.model, feeds, args.runs, args.threads)
    int8 = profile(work.root / "speed-models" / "ours_int8.onnx", feeds, args.runs, args.threads)
    t32, t8 = sum(fp32.values()), sum(int8.values())
    ops = sorted(set(fp32) | set(int8), key=lambda k: -(fp32.get(k, 0) + int8.get(k, 0)))[:16]
    rows = [[op, f"{fp32.get(op, 0) / 1000:.1f}", f"{100 * fp32.get(op, 0) / t32:.1f}%",
             f"{int8.get(op, 0) / 1000:.1f}", f"{100 * int8.get(op, 0) / t8:.1f}%"] for op in ops]
    rows.append(["all kernels", f"{t32 / 1000:.1f}", "100%", f"{t8 / 1000:.1f}", "100%"])
    conv32 = fp32.get("Conv", 0)
    conv8 = int8.get("QLinearConv", 0) + int8.get("Conv", 0)
    summary = (f"Convolutions: {conv32 / 1000:.1f} ms FP32 -> {conv8 / 1000:.1f} ms INT8 "
               f"({conv32 / max(conv8, 1):.2f}x); everything else: {(t32 - conv32) / 1000:.1f} ms FP32 -> "
               f"{(t8 - conv8) / 1000:.1f} ms INT8. Kernel-time ratio {t32 / t8:.2f}x.")
    print(summary)
    body = "\n".join([
        f"## Where the time goes: {work.root.name}, batch {args.batch} (ONNX Runtime profiler)",
        "",
        f"- Command: `{command}` (after `python -m benchmarks.speed`)",
        f"- Machine: {machine()}; {args.threads} threads; date {today()}",
        f"- {summary}",
        "",
        markdown_table(["op type", "FP32 ms/run", "FP32 share", "INT8 ms/run", "INT8 share"], rows),
    ])
    write_section(f"profile-{work.root.name}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
