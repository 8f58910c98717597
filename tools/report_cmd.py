"""``python -m tools report WORK``: one self-contained WORK/report/index.html from what the other commands wrote
(validate.json and its grids, sensitivity.json, quantize.json, export.json), plus CPU step latency (ONNX Runtime or OpenVINO)."""

from __future__ import annotations

from pathlib import Path

from common.workdir import WorkDir
from engines.backends import fp8_backend
from tools.cli_parser import CliParser, add_backend, check_at_least_one, cpu_backend_arg
from validation.report import ReportConfig, write_report


def main(argv: list[str]) -> int:
    p = CliParser(prog="python -m tools report", description=__doc__)
    p.add_argument("work", type=Path)
    p.add_argument("--no-latency", action="store_true", help="do not measure latency when validate.json has none")
    p.add_argument("--repeats", type=int, default=5, help="interleaved latency rounds per model and batch")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    add_backend(p, "CPU backend of the latency rows")
    p.add_argument("--top", type=int, default=30, help="layers shown in the sensitivity chart")
    p.add_argument("--precision", default="int8", choices=["int8", "fp8"],
                   help="the quantized graph reported: int8 -> report/index.html; fp8 -> report/fp8.html (FP8 "
                        "simulated on the CPU; needs quantize --format fp8)")
    args = p.parse_args(argv)
    check_at_least_one(args, "repeats", "top")
    backend = cpu_backend_arg(args.backend, "report")
    work = WorkDir(args.work)
    work.load_export_info()
    if args.precision == "fp8":
        work.model_for("fp8")  # a UserError naming quantize --format fp8 when there is no FP8 graph
        backend, note = fp8_backend(args.backend, backend)  # latency rows: OpenVINO has no FP8 Q/DQ
        print(note)
    out = write_report(work, ReportConfig(not args.no_latency, args.repeats, args.threads, args.top, backend,
                                          args.precision))
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, self-contained)")
    return 0
