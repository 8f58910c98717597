"""benchmarks/gpu_check.py: a clear "needs CUDA" exit here; its tables; the full run on a GPU (gpu)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import gpu_check


def test_without_cuda_it_exits_2_saying_what_it_needs(tiny_work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    assert gpu_check.main([str(tiny_work), "--runs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: benchmarks.gpu_check needs CUDA")
    assert "requirements-gpu.txt" in err
    assert not (tiny_work / "report" / "gpu_check.json").exists()


def test_rows_that_could_not_run_say_why() -> None:
    from common.errors import UserError

    def missing() -> float:
        raise UserError("no model.int8.plan: python -m tools build WORK --precision int8")

    def broken() -> float:
        raise RuntimeError("cuDNN error\nsecond line")

    rows = [gpu_check._Row("ok").run(lambda: 41.234), gpu_check._Row("engine").run(missing),
            gpu_check._Row("bad").run(broken)]
    assert [r.value for r in rows] == [41.234, None, None]
    assert rows[1].note == "not run: no model.int8.plan: python -m tools build WORK --precision int8"
    assert rows[2].note == "failed: RuntimeError: cuDNN error"
    args = argparse.Namespace(images=8, steps=50, batch=8, runs=50)
    body = gpu_check.render(rows, rows[:1], args, "NVIDIA H200", "torch 2.x", "python -m benchmarks.gpu_check W")
    assert "| ok | 41.23 |  |" in body and "| engine |  | not run: no model.int8.plan" in body
    assert "| ok | 41.234 |  |" in body and "- Command: `python -m benchmarks.gpu_check W`" in body
    json.dumps([r.to_json() for r in rows])


@pytest.mark.gpu("onnxruntime-gpu")
def test_gpu_check_runs_on_the_reference_model(reference_work: Path) -> None:
    assert gpu_check.main([str(reference_work), "--images", "2", "--steps", "5", "--batch", "2", "--runs", "3"]) == 0
    report = json.loads((reference_work / "report" / "gpu_check.json").read_text())
    rows = {r["name"]: r for r in report["accuracy_psnr_db"] + report["latency_ms"]}
    assert rows["FP16 rewrite, ONNX Runtime CUDA"]["value"] > 40
    assert rows["ONNX Runtime CUDA FP32, IO binding (CUDA tensors)"]["value"] > 0
    assert rows["PyTorch FP16 CUDA graph"]["value"] > 0
