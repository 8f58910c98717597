"""CPU backend choice for ``--backend auto`` (CPU flags mocked) and the INT8 graph OpenVINO runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.workdir import WorkDir
from engines import backends, cpu_backend
from engines.cpu_backend import choose_cpu_backend, cpu_flags, cpu_vnni_flags, openvino_model, saturation_warning
from engines.group_manifest import grouped_manifest_for

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


def _feeds(work: Path, t: float) -> dict[str, np.ndarray]:
    c, h, w = WorkDir(work).load_export_info()["inputs"]["sample"]["shape"][1:]
    x = np.random.default_rng(0).standard_normal((2, c, h, w)).astype(np.float32)
    return {"sample": x, "timestep": np.full((2,), t, np.float32)}


@pytest.mark.skipif(not cpu_backend.openvino_installed(), reason="OpenVINO is not installed")
def test_openvino_routes_each_step_to_its_group_graph(tiny_grouped: Path, tmp_path: Path) -> None:
    """``--backend openvino`` on a folder with group graphs: one compiled model per group, each step on its own."""
    from engines.openvino_session import OpenVinoSession
    from engines.timestep_routed import TimestepGroupedSession

    path = openvino_model(WorkDir(tiny_grouped), "int8")
    manifest = grouped_manifest_for(path)
    assert manifest is not None and path.name == "model.int8.trt.onnx"  # OpenVINO runs the tensorrt-target set
    session, described = backends.open_session(WorkDir(tiny_grouped), "int8", "openvino", threads=1)
    assert isinstance(session, TimestepGroupedSession) and "4 time-step groups" in described
    assert all(isinstance(s, OpenVinoSession) for s in session.sessions)
    assert [s.model_path for s in session.sessions] == manifest.model_paths(tiny_grouped)  # type: ignore[attr-defined]
    with session:
        for g, (first, last) in enumerate(manifest.bounds):
            for t in (first, last):
                with OpenVinoSession(manifest.model_paths(tiny_grouped)[g], threads=1) as alone:
                    want = alone.run(_feeds(tiny_grouped, t))["out"]
                np.testing.assert_array_equal(session.run(_feeds(tiny_grouped, t))["out"], want)
    assert session.calls == [2, 2, 2, 2]
    # groups=False (latency): the named graph alone
    assert isinstance(cpu_backend.cpu_session(path, "openvino", groups=False), OpenVinoSession)
    assert isinstance(cpu_backend.cpu_session(path, "ort"), TimestepGroupedSession)
