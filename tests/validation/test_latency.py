"""Step latency rows on either CPU backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validation.latency import step_latency_ms


class FakeClock:
    """``time.perf_counter`` whose (start, end) pairs are ``durations_ms`` apart, in call order."""

    def __init__(self, durations_ms: list[float]) -> None:
        self.durations = iter(durations_ms)
        self.now = 0.0
        self.started = False

    def perf_counter(self) -> float:
        if self.started:
            self.now += next(self.durations) / 1000
        self.started = not self.started
        return self.now


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_rows_per_model_and_batch(tiny_work: Path, tmp_path: Path, backend: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One row per model and batch; each the median of that model's calls, the models' calls interleaved (a fake
    clock gives call k of a round its duration)."""
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements.txt)")
    import validation.latency as latency

    # per batch, rounds of (A, B): A takes 1, 5, 2 ms and B 10, 30, 20 ms (medians 2 and 20; means 2.67 and 20)
    clock = FakeClock([1, 10, 5, 30, 2, 20] + [3, 40, 9, 60, 4, 50])
    monkeypatch.setattr(latency, "time", clock)
    info = json.loads((tiny_work / "export.json").read_text())
    models = {"A": tiny_work / "model.onnx", "B": tiny_work / "model.onnx"}
    rows = step_latency_ms(models, info, [1, 2], repeats=3, threads=1, backend=backend, cache_dir=tmp_path / "cache")
    assert rows == [{"backend": "A", "batch": 1, "ms": 2.0}, {"backend": "B", "batch": 1, "ms": 20.0},
                    {"backend": "A", "batch": 2, "ms": 4.0}, {"backend": "B", "batch": 2, "ms": 50.0}]
