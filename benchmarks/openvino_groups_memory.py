"""Memory of time-step-grouped graphs (quantize --timestep-groups K) on OpenVINO's CPU plugin: K compiled models
against one.

    python -m benchmarks.openvino_groups_memory WORK [--batch 1 16]

WORK must hold group graphs beside the INT8 graph OpenVINO runs (``engines.cpu_backend.openvino_model``: the
tensorrt-target set when there is one). Peak RSS of a fresh process (1 inference thread, no model cache) that opens
the sessions exactly as ``sample --backend openvino`` does (``engines.cpu_backend.cpu_session``) and runs one call on
each: the global graph alone (``groups=False``) and the K group graphs (one ``OpenVinoSession`` per group).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import command_line, markdown_table, section_head, write_section
from common.errors import UserError
from common.workdir import WorkDir
from engines.cpu_backend import openvino_model
from engines.group_manifest import grouped_manifest_for

REPO = Path(__file__).resolve().parents[1]

# Opens the session(s) of one configuration as sample does, runs one call per group, writes peak RSS (KiB).
_MEMORY = r"""
import resource, sys
from pathlib import Path
import numpy as np
from engines.cpu_backend import cpu_session
from engines.timestep_routed import TimestepGroupedSession
out, grouped, batch, shape, model = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
shape = [int(v) for v in shape.split(",")]
session = cpu_session(model, "openvino", threads=1, groups=grouped)
with session:
    steps = [b[0] for b in session.bounds] if isinstance(session, TimestepGroupedSession) else [500]
    for t in steps:
        session.run({"sample": np.zeros([batch, *shape], np.float32), "timestep": np.full([batch], t, np.float32)})
    open(out, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def peak_rss_mib(model: Path, grouped: bool, batch: int, shape: tuple[int, ...]) -> float:
    """Peak RSS in MiB of a fresh process that opens ``model`` (its K groups when ``grouped``) and runs it."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as f:
        subprocess.run([sys.executable, "-c", _MEMORY, f.name, "1" if grouped else "0", str(batch),
                        ",".join(map(str, shape)), str(model)], check=True, cwd=REPO)
        return int(Path(f.name).read_text()) / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--section", default="openvino-groups-memory")
    args = p.parse_args(argv)
    command = command_line("benchmarks.openvino_groups_memory", argv)
    work = WorkDir(args.work)
    model = openvino_model(work, "int8")
    manifest = grouped_manifest_for(model)
    if manifest is None or len(manifest.groups) < 2:
        raise UserError(f"no group graphs beside '{model}': python -m tools quantize {work.root} --timestep-groups K")
    k = len(manifest.groups)
    shape = tuple(work.load_export_info()["inputs"]["sample"]["shape"][1:])
    load, rows = [], []
    for batch in args.batch:
        load.append(os.getloadavg()[0])
        one = peak_rss_mib(model, False, batch, shape)
        grouped = peak_rss_mib(model, True, batch, shape)
        rows.append([batch, f"{one:.1f}", f"{grouped:.1f}", f"{(grouped - one) / (k - 1):.1f}"])
        print(rows[-1], flush=True)
    import openvino

    body = "\n".join([
        *section_head(f"Time-step-grouped graphs on OpenVINO: memory of K = {k} compiled models", command,
                      f"1-minute load average {min(load):.1f}-{max(load):.1f}; "),
        (f"- Work folder `{args.work}`, graph `{model.name}`, OpenVINO {openvino.__version__}; group bounds (t): "
         + ", ".join(f"[{a}, {b}]" for a, b in manifest.bounds)),
        ("- Peak RSS (MiB) of a fresh process (1 inference thread, no model cache) that opens the sessions as "
         "`sample --backend openvino` does and runs one call on each: the global graph alone, and the K group graphs "
         "(one compiled model and infer request per group). Per extra group = (K groups - global) / (K - 1)."),
        "",
        markdown_table(["batch", "global MiB", f"{k} groups MiB", "per extra group MiB"], rows),
    ])
    write_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
