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
    print(row)
    if not args.keep:
        shutil.rmtree(work)
    body = "\n".join([
        "## Export cost",
        "",
        f"- Command: `python -m benchmarks.export_cost --arch {args.arch}` (runs `python -m tools export --arch "
        f"{args.arch} WORK` in a fresh process, including the ONNX-vs-PyTorch check at three time steps)",
        f"- Machine: {machine()}; date {today()}",
        "",
        markdown_table(["arch", "parameters", "ONNX size", "external data", "wall s", "peak RSS GiB",
                        "max rel. error"], [row]),
    ])
    write_section(f"export-{args.arch}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
