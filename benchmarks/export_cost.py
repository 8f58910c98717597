"""Export wall time and peak memory of ``sd15-unet`` (3.4 GB FP32, external data), one fresh process per run.

    python -m benchmarks.export_cost [--arch sd15-unet]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from benchmarks.common import REPO, machine, markdown_table, today, write_section
from benchmarks.subprocess_peak import run_measured


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sd15-unet")
    p.add_argument("--keep", action="store_true", help="keep the work folder (several GB)")
    p.add_argument("--calibrate", type=int, default=2, metavar="N",
                   help="then calibrate with N samples (uniform, 4 DDIM steps, every 2nd) and measure it too; 0: skip")
    args = p.parse_args(argv)
    work = REPO / "work" / f"export-{args.arch}"
    wall, peak, code = run_measured(["tools", "export", "--arch", args.arch, str(work), "--force"], REPO)
    if code != 0:
        print(f"export failed with exit code {code}", file=sys.stderr)
        return code
    info = json.loads((work / "export.json").read_text())
    onnx_bytes = sum(f.stat().st_size for f in work.iterdir() if f.name.startswith("model.onnx"))
    row = [args.arch, f"{info['num_parameters'] / 1e6:.0f} M", f"{onnx_bytes / 2**30:.2f} GiB",
           "yes" if info["onnx"]["external_data"] else "no", f"{wall:.0f}", f"{peak:.1f}",
           f"{info['verification']['max_rel_error']:.1e}"]
    print(row, flush=True)
    calib_rows = []
    if args.calibrate > 0:
        flags = ["--method", "uniform", "--samples", str(args.calibrate), "--steps", "4", "--every", "2",
                 "--groups", "2", "--batch-rows", "2"]
        c_wall, c_peak, code = run_measured(["tools", "calibrate", str(work), *flags], REPO)
        if code != 0:
            print(f"calibration failed with exit code {code}", file=sys.stderr)
            return code
        calib_rows.append([f"calibrate {' '.join(flags)}", f"{c_wall:.0f}", f"{c_peak:.1f}"])
        print(calib_rows[-1], flush=True)
    if not args.keep:
        shutil.rmtree(work)
    body = "\n".join([
        "## Export cost",
        "",
        f"- Command: `python -m benchmarks.export_cost --arch {args.arch} --calibrate {args.calibrate}` (runs `python -m tools export --arch "
        f"{args.arch} WORK` in a fresh process, including the ONNX-vs-PyTorch check at three time steps)",
        f"- Machine: {machine()}; date {today()}",
        "",
        markdown_table(["arch", "parameters", "ONNX size", "external data", "wall s", "peak RSS GiB",
                        "max rel. error"], [row]),
        "",
        "Calibration of the exported model in a fresh process (random text embeddings, guidance pairs, every "
        "quantizable tensor tapped at once):" if calib_rows else "",
        "",
        markdown_table(["command", "wall s", "peak RSS GiB"], calib_rows) if calib_rows else "",
    ])
    write_section(f"export-{args.arch}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
