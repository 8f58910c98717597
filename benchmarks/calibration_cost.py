"""Calibration wall time and peak memory on the reference model: 256 NDTC samples (DDIM 50) and the uniform
recipe, each in a fresh process with an empty calib/ cache.

    python -m benchmarks.calibration_cost [--model models/digits-ddpm]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from benchmarks.common import REPO, machine, markdown_table, today, write_section
from benchmarks.subprocess_peak import run_measured

RECIPES = {
    "ndtc, 256 samples, DDIM 50": ["--method", "ndtc", "--samples", "256", "--steps", "50"],
    "uniform, 256 samples (every 5th of DDIM 50)": ["--method", "uniform", "--samples", "256", "--steps", "50",
                                                   "--every", "5"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    args = p.parse_args(argv)
    work = REPO / "work" / "calib-cost"
    code = run_measured(["tools", "export", "--model", str(args.model), str(work), "--force"], REPO)[2]
    if code:
        return code
    rows = []
    for label, flags in RECIPES.items():
        shutil.rmtree(work / "calib", ignore_errors=True)
        wall, peak, code = run_measured(["tools", "calibrate", str(work), *flags], REPO)
        if code:
            return code
        rows.append([label, f"{wall:.1f}", f"{peak:.2f}"])
        print(rows[-1], flush=True)
    body = "\n".join([
        "## Calibration cost (reference model)",
        "",
        "- Command: `python -m benchmarks.calibration_cost` (each recipe: `python -m tools calibrate WORK ...` in a "
        "fresh process, empty `calib/`; includes trajectory generation, statistics of every quantizable tensor, "
        "and ranges). Goal: each <= 5 minutes on 2 cores.",
        f"- Machine: {machine()}; date {today()}",
        "",
        markdown_table(["recipe", "wall s", "peak RSS GiB"], rows),
    ])
    write_section("calibration-cost", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
