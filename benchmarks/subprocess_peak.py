"""Run ``python -m <module> ...`` in a fresh process and report its own wall time and peak resident memory."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs the module as __main__ and, however it ends, writes the process's own peak RSS (KiB) to argv[1].
_WRAPPER = """
import resource, runpy, sys
out, module = sys.argv[1], sys.argv[2]
sys.argv = [module] + sys.argv[3:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    open(out, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def run_measured(args: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS of that process in GiB, exit code) of ``python -m args[0] args[1:]``."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as f:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _WRAPPER, f.name, *args], cwd=cwd, check=False)
        wall = time.perf_counter() - start
        text = Path(f.name).read_text().strip()
    return wall, (int(text) if text else 0) / 2**20, proc.returncode
