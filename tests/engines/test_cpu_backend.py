"""CPU backend choice for ``--backend auto`` (CPU flags mocked) and the INT8 graph OpenVINO runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.workdir import WorkDir
from engines import backends, cpu_backend
from engines.cpu_backend import choose_cpu_backend, cpu_flags, cpu_vnni_flags, openvino_model, saturation_warning

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n"
ALDER = "processor\t: 0\nflags\t\t: fpu avx2 avx_vnni\n"


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    assert "avx2" in cpu_flags(cpuinfo(tmp_path, AVX2_ONLY))
    assert cpu_flags(tmp_path / "missing") == set()
    assert cpu_vnni_flags(cpuinfo(tmp_path, SAPPHIRE)) == ["amx_int8", "avx512_vnni"]
    assert cpu_vnni_flags(cpuinfo(tmp_path, ALDER)) == ["avx_vnni"]
    assert cpu_vnni_flags(cpuinfo(tmp_path, AVX2_ONLY)) == []


@pytest.mark.parametrize(("text", "installed", "expected", "reason"), [
    (SAPPHIRE, True, "openvino", "amx_int8"),
    (ALDER, True, "openvino", "avx_vnni"),
    (AVX2_ONLY, True, "ort", "no VNNI/AMX"),
    (SAPPHIRE, False, "ort", "not installed"),
])
def test_auto_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, installed: bool, expected: str,
                     reason: str) -> None:
    monkeypatch.setattr(cpu_backend, "openvino_installed", lambda: installed)
    chosen, why = choose_cpu_backend(cpuinfo(tmp_path, text))
    assert chosen == expected and reason in why


def test_auto_without_tensorrt_takes_the_cpu_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "tensorrt_available", lambda: False)
    monkeypatch.setattr(backends, "choose_cpu_backend", lambda: ("openvino", "mocked"))
    assert backends.resolve_backend("auto") == "openvino"
    monkeypatch.setattr(backends, "choose_cpu_backend", lambda: ("ort", "mocked"))
    assert backends.resolve_backend("auto") == "ort"


def test_open_session_says_which_and_why(tiny_work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "tensorrt_available", lambda: False)
    monkeypatch.setattr(backends, "choose_cpu_backend", lambda: ("openvino", "the CPU has amx_int8"))
    session, described = backends.open_session(WorkDir(tiny_work), "fp32", "auto")
    assert type(session).__name__ == "OpenVinoSession"
    assert described.startswith("OpenVINO (model.onnx") and "amx_int8" in described and "\n" not in described


def test_openvino_prefers_the_tensorrt_target_graph(tmp_path: Path) -> None:
    (tmp_path / "model.int8.onnx").write_bytes(b"x")
    assert openvino_model(WorkDir(tmp_path), "int8").name == "model.int8.onnx"
    (tmp_path / "model.int8.trt.onnx").write_bytes(b"x")
    assert openvino_model(WorkDir(tmp_path), "int8").name == "model.int8.trt.onnx"


def test_saturation_warning_only_for_full_range_int8_without_vnni(tmp_path: Path) -> None:
    import json

    work = WorkDir(tmp_path)
    graph = tmp_path / "model.int8.trt.onnx"
    record = tmp_path / "quantize.trt.json"
    avx2, amx = cpuinfo(tmp_path, AVX2_ONLY), tmp_path / "amx"
    amx.write_text(SAPPHIRE)
    record.write_text(json.dumps({"policy": {"target": "tensorrt"}}))
    warning = saturation_warning(work, graph, avx2)
    assert warning and "--reduce-range" in warning and graph.name in warning and "\n" not in warning
    assert saturation_warning(work, graph, amx) is None
    assert saturation_warning(work, work.model, avx2) is None  # FP32: nothing to saturate
    record.write_text(json.dumps({"policy": {"target": "tensorrt", "reduce_range": True}}))
    assert saturation_warning(work, graph, avx2) is None
