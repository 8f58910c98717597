"""Step latency rows on either CPU backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validation.latency import step_latency_ms


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_rows_per_model_and_batch(tiny_work: Path, tmp_path: Path, backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements.txt)")
    info = json.loads((tiny_work / "export.json").read_text())
    rows = step_latency_ms({"FP32": tiny_work / "model.onnx"}, info, [1, 2], repeats=2, threads=1, backend=backend,
                           cache_dir=tmp_path / "cache")
    assert [(r["backend"], r["batch"]) for r in rows] == [("FP32", 1), ("FP32", 2)]
    assert all(r["ms"] > 0 for r in rows)
