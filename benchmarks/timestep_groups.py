"""Cost of time-step-grouped graphs (quantize --timestep-groups K) on ONNX Runtime's CPU provider: memory and the
switching cost per step.

    python -m benchmarks.timestep_groups WORK [--rounds 15] [--batch 1 16]

WORK must hold ``model.int8.ort.onnx`` quantized with ``--timestep-groups K`` (K >= 2). Memory: peak RSS of a fresh
process that opens the sessions and runs one call on each, for the global graph alone, the K group graphs as written
(one shared external-data file), and the K group graphs with ONNX Runtime's shared initializers
(``SessionOptions.add_initializer``: one OrtValue per shared weight for every session) plus the environment's shared
arena allocator (``session.use_env_allocators``). Switching: per-call latency of the grouped session when every call
changes group (alternating t between groups) against calls that stay in one group, in interleaved rounds (medians),
with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import command_line, markdown_table, section_head, write_section
from common.errors import UserError
from common.workdir import WorkDir
from engines.backends import onnx_session
from engines.group_manifest import GroupManifest, manifest_path
from engines.timestep_routed import TimestepGroupedSession

# Opens the sessions of one configuration, runs one call on each, writes the process's peak RSS (KiB).
_MEMORY = r"""
import resource, sys
import numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
out, mode, batch, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(v) for v in sys.argv[4].split(",")]
paths = sys.argv[5:]
feeds = {"sample": np.zeros([batch, *shape], np.float32), "timestep": np.full([batch], 500, np.float32)}
shared = {}
if mode == "shared":
    ort.create_and_register_allocator(ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                                        ort.OrtMemType.DEFAULT), None)
    m = onnx.load(paths[0])
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            shared[t.name] = ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(t, base_dir=str(__import__("pathlib").Path(paths[0]).parent)))
sessions = []
for p in paths:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if mode == "shared":
        so.add_session_config_entry("session.use_env_allocators", "1")
        for name, value in shared.items():
            so.add_initializer(name, value)
    s = ort.InferenceSession(p, sess_options=so, providers=["CPUExecutionProvider"])
    s.run(None, feeds)
    sessions.append(s)
open(out, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def peak_rss_mib(mode: str, paths: list[Path], batch: int, shape: tuple[int, ...]) -> float:
    with tempfile.NamedTemporaryFile(suffix=".rss") as f:
        subprocess.run([sys.executable, "-c", _MEMORY, f.name, mode, str(batch), ",".join(map(str, shape)),
                        *map(str, paths)], check=True)
        return int(Path(f.name).read_text()) / 1024


def switching(session: TimestepGroupedSession, batch: int, shape: tuple[int, ...], rounds: int,
              calls: int = 8) -> tuple[float, float]:
    """Median per-call seconds (stay in one group, switch group every call), interleaved round by round."""
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    lo, hi = session.bounds[0][0], session.bounds[-1][1]

    def feeds(t: int) -> dict[str, np.ndarray]:
        return {"sample": x, "timestep": np.full((batch,), t, np.float32)}

    stay, switch = [], []
    for _ in range(rounds + 1):
        for pattern, out in (([lo] * calls, stay), ([lo, hi] * (calls // 2), switch)):
            for t in pattern:
                start = time.perf_counter()
                session.run(feeds(t))
                out.append(time.perf_counter() - start)
    return float(np.median(stay[calls:])), float(np.median(switch[calls:]))  # first round: warm-up


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--section", default="timestep-groups-cost")
    args = p.parse_args(argv)
    command = command_line("benchmarks.timestep_groups", argv)
    work = WorkDir(args.work)
    model = work.int8_model("onnxruntime")
    if not manifest_path(model).is_file():
        raise UserError(f"no group graphs beside '{model}': python -m tools quantize {work.root} --timestep-groups K")
    manifest = GroupManifest.load(manifest_path(model))
    k = len(manifest.groups)
    groups = manifest.model_paths(work.root)
    shape = tuple(work.load_export_info()["inputs"]["sample"]["shape"][1:])
    disk = {"global graph": model.stat().st_size, "group graphs (each)": groups[0].stat().st_size,
            "shared data (once)": (work.root / manifest.shared_data).stat().st_size}
    load = []
    mem_rows = []
    for batch in args.batch:
        load.append(os.getloadavg()[0])
        one = peak_rss_mib("plain", [model], batch, shape)
        grouped = peak_rss_mib("plain", groups, batch, shape)
        shared = peak_rss_mib("shared", groups, batch, shape)
        mem_rows.append([batch, f"{one:.1f}", f"{grouped:.1f}", f"{shared:.1f}", f"{(grouped - one) / (k - 1):.1f}",
                         f"{(shared - one) / (k - 1):.1f}"])
        print(mem_rows[-1], flush=True)
    time_rows = []
    session = onnx_session(model, threads=1)
    assert isinstance(session, TimestepGroupedSession)
    with session:
        for batch in args.batch:
            load.append(os.getloadavg()[0])
            stay, switch = switching(session, batch, shape, args.rounds)
            time_rows.append([batch, f"{stay * 1e3:.2f}", f"{switch * 1e3:.2f}", f"{switch / stay:.3f}"])
            print(time_rows[-1], flush=True)
    body = "\n".join([
        *section_head(f"Time-step-grouped graphs: memory and switching cost (K = {k}, ONNX Runtime CPU)", command,
                      f"1-minute load average {min(load):.1f}-{max(load):.1f}; "),
        f"- Work folder `{args.work}`; group bounds (t): " + ", ".join(f"[{a}, {b}]" for a, b in manifest.bounds),
        "- Disk (bytes): " + ", ".join(f"{k_}: {v}" for k_, v in disk.items()),
        "- Peak RSS (MiB) of a fresh process (1 intra-op thread) that opens the sessions and runs one call on each: "
        "the global graph alone; the K group graphs as written (each session reads the shared data file into its own "
        "memory); the same with ONNX Runtime's shared initializers (`add_initializer`, one OrtValue per weight) and "
        "the shared environment arena (`session.use_env_allocators`). Per extra group = (K groups - global) / (K - 1).",
        "",
        markdown_table(["batch", "global MiB", f"{k} groups MiB", f"{k} groups, shared MiB", "per extra group MiB",
                        "per extra group, shared MiB"], mem_rows),
        "",
        "- Switching: median ms per UNet call of the grouped session (1 intra-op thread), calls that stay in one group "
        "against calls that alternate between the first and the last group, "
        f"{args.rounds} interleaved rounds of 8 calls each.",
        "",
        markdown_table(["batch", "same group ms", "switching every call ms", "ratio"], time_rows),
    ])
    write_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
