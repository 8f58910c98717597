"""Patch the installed ``tensorrt-stubs`` so mypy can parse them (idempotent; run by ``make typecheck``).

tensorrt-stubs 10.13.0.35.1 has two syntax defects in ``tensorrt_bindings/tensorrt.pyi`` that stop mypy:
plugin methods with a parameter named ``in`` (a keyword), and ``add_scale_nd(..., power: Weights = None,
channel_axis: int)`` (a parameter without default after one with a default). This renames ``in`` to ``in_`` and
gives ``channel_axis`` a default. Only the stub copy inside the active environment is touched.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

PARAM_IN = re.compile(r"(?<=[(,] )in(?=: )|(?<=\()in(?=: )")
CHANNEL_AXIS = "power: Weights = None, channel_axis: int)"
CHANNEL_AXIS_FIXED = "power: Weights = None, channel_axis: int = ...)"


def stub_file() -> Path:
    spec = importlib.util.find_spec("tensorrt_bindings")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "tensorrt.pyi"
        if path.is_file():
            return path
    sys.exit("tensorrt-stubs is not installed: pip install --no-deps tensorrt-stubs==10.13.0.35.1")


def patch(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("def "):
            line = PARAM_IN.sub("in_", line)
        lines.append(line)
    return "".join(lines).replace(CHANNEL_AXIS, CHANNEL_AXIS_FIXED)


def main() -> int:
    path = stub_file()
    text = path.read_text()
    patched = patch(text)
    if patched == text:
        print(f"{path}: already patched")
        return 0
    path.write_text(patched)
    print(f"{path}: patched ('in' -> 'in_', channel_axis default)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
