"""Layers point one way: a package imports only packages left of it (or itself) in LAYERS. Checked on the source
of every module, imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("common", "engines", "pipelines", "exporter", "calibrators", "quantization", "validation", "serving", "tools",
          "benchmarks")


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages ``path`` imports (anywhere in the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in LAYERS)
    return found


def violations(layers: tuple[str, ...] = LAYERS) -> list[str]:
    bad = []
    for rank, package in enumerate(layers):
        for path in sorted((REPO / package).rglob("*.py")):
            for dep in imported_packages(path):
                if layers.index(dep) > rank:
                    bad.append(f"{path.relative_to(REPO)} imports {dep}")
    return bad


def test_packages_import_only_lower_layers() -> None:
    assert violations() == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tools.cli_parser import CliParser\n    import quantization.qdq_rules\n")
    assert imported_packages(module) == {"tools", "quantization"}


@pytest.mark.parametrize("package", LAYERS)
def test_every_layer_is_a_package(package: str) -> None:
    assert (REPO / package / "__init__.py").is_file()


def test_ranges_file_imports_without_either_stage() -> None:
    """TensorRanges joins calibration and quantization: importing it loads no estimator, collector or Q/DQ code."""
    import subprocess
    import sys

    code = ("import sys, calibrators.ranges; print(sorted(m for m in sys.modules "
            "if m.startswith(('calibrators.', 'quantization', 'exporter', 'engines'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['calibrators.ranges', 'calibrators.settings']"
