"""TensorRT engines of time-step group graphs on the CPU: ``build_engine`` and TrtSession's TensorRT parts mocked.

What runs for real: the grouped build's bookkeeping (which graph each engine is built from, with which options, the
one ``.plan.json``, stale engines removed), the checks every group engine passes before it is loaded (sha256, stale
source, TensorRT version and GPU of the record), and the routing of each denoising step to its group's session.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.errors import UserError
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from engines import backends
from engines.tensorrt import groups as trt_groups
from engines.group_manifest import GroupManifest, manifest_path
from pipelines.runner import DenoiseRunner, seeded_noise
from pipelines.schedulers import make_scheduler
from engines.timestep_routed import TimestepGroupedSession, group_index
from engines.tensorrt.build import BuildOptions, profiles_from_export, source_onnx
from engines.tensorrt.groups import build_grouped_engines, trt_unet_session
from engines.tensorrt.plan import (
    GpuInfo,
    GroupEngine,
    PlanInfo,
    info_path,
    load_checked_group,
    plan_path,
    read_plan_info,
    write_plan_info,
)
from engines.tensorrt.session import TrtSession
from tests.conftest import run_cli

TRT_VERSION = "10.13.0.35"
GPU = GpuInfo("NVIDIA H200", "9.0")


@pytest.fixture()
def work(tiny_grouped: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "w"
    shutil.copytree(tiny_grouped, dest, ignore=shutil.ignore_patterns("report", ".openvino_cache"))
    return dest


class FakeBuild:
    """Stands in for ``engines.tensorrt.build.build_engine``: writes an "engine" naming its source, records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, BuildOptions, bool]] = []

    def __call__(self, work: WorkDir, options: BuildOptions, command: str = "", source: Path | None = None,
                 plan: Path | None = None, write_info: bool = True) -> tuple[Path, PlanInfo]:
        source = source or source_onnx(work, options.precision)
        plan = plan or plan_path(work.root, options.precision)
        self.calls.append((source.name, plan.name, options, write_info))
        plan.write_bytes(b"engine built from " + source.name.encode())
        info = PlanInfo(precision=options.precision, tensorrt_version=TRT_VERSION, gpu=GPU,
                        profiles=list(options.profiles), source_onnx=source.name,
                        source_sha256=onnx_model_sha256(source), strongly_typed=True,
                        builder={"layers": {"layers": 9, "convolutions": 4, "int8_convolutions": 3},
                                 "build_seconds": 1.5, "command": command})
        if write_info:
            write_plan_info(plan, info)
        return plan, info


def _options(work: Path) -> BuildOptions:
    return BuildOptions("int8", tuple(profiles_from_export(WorkDir(work).load_export_info())), opt_level=3)


def _build(work: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, PlanInfo, FakeBuild]:
    fake = FakeBuild()
    monkeypatch.setattr(trt_groups, "build_engine", fake)
    plan, info = build_grouped_engines(WorkDir(work), _options(work), command="python -m tools build w")
    return plan, info, fake


def test_one_engine_per_group_graph_recorded_in_one_plan_json(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, info, fake = _build(work, monkeypatch)
    manifest = GroupManifest.load(manifest_path(work / "model.int8.trt.onnx"))
    # the global engine first, then one per group graph: the same options, no .plan.json of their own
    assert [(c[0], c[1]) for c in fake.calls] == [("model.int8.trt.onnx", "model.int8.plan")] + [
        (f"model.int8.trt.g{g}.onnx", f"model.int8.g{g}.plan") for g in range(4)]
    assert all(c[2] == _options(work) and c[3] is False for c in fake.calls)
    assert sorted(p.name for p in work.glob("*.plan*")) == ["model.int8.g0.plan", "model.int8.g1.plan",
                                                            "model.int8.g2.plan", "model.int8.g3.plan",
                                                            "model.int8.plan", "model.int8.plan.json"]
    record = json.loads(info_path(plan).read_text())
    assert record["builder"]["command"] == "python -m tools build w"  # the options once, at the top
    assert len(record["timestep_groups"]) == 4 and read_plan_info(plan) == info
    for g, (entry, engine) in enumerate(zip(manifest.groups, info.timestep_groups, strict=True)):
        data = (work / engine.plan).read_bytes()
        assert (engine.first_t, engine.last_t) == (entry.first_t, entry.last_t)
        assert engine.plan_sha256 == hashlib.sha256(data).hexdigest() and engine.plan_bytes == len(data)
        assert engine.source_onnx == entry.model and engine.source_sha256 == entry.model_sha256
        assert engine.shared_data == manifest.shared_data and engine.layers["int8_convolutions"] == 3
        assert data == f"engine built from model.int8.trt.g{g}.onnx".encode()
        assert load_checked_group(plan, g, TRT_VERSION, GPU) == info


def test_a_plain_rebuild_removes_the_group_engines(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, _, _ = _build(work, monkeypatch)
    assert run_cli("quantize", work, "--target", "tensorrt") == 0  # no groups any more
    plan, info, fake = _build(work, monkeypatch)
    assert len(fake.calls) == 1 and fake.calls[0][3] is True and not info.timestep_groups
    assert sorted(p.name for p in work.glob("*.plan*")) == ["model.int8.plan", "model.int8.plan.json"]
    session, _ = trt_unet_session(plan)
    assert isinstance(session, TrtSession) and session.plan == plan and session.checker is None


def test_group_engines_are_checked_against_the_record(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, info, _ = _build(work, monkeypatch)
    with pytest.raises(UserError, match="built by TensorRT 10.13.0.35, this is TensorRT 10.8"):
        load_checked_group(plan, 0, "10.8.0.43", GPU)
    with pytest.raises(UserError, match="built for NVIDIA H200"):
        load_checked_group(plan, 0, TRT_VERSION, GpuInfo("NVIDIA L4", "8.9"))
    with pytest.raises(UserError, match="records 4 time-step group engines, not group 4"):
        load_checked_group(plan, 4, TRT_VERSION, GPU)
    (work / "model.int8.g1.plan").write_bytes(b"another engine")
    with pytest.raises(UserError, match="'.*model.int8.g1.plan' is not the one built with 'model.int8.plan'"):
        load_checked_group(plan, 1, TRT_VERSION, GPU)
    (work / "model.int8.g2.plan").unlink()
    with pytest.raises(UserError, match="names group engine 'model.int8.g2.plan', which does not exist"):
        load_checked_group(plan, 2, TRT_VERSION, GPU)
    group_graph = work / info.timestep_groups[3].source_onnx
    group_graph.write_bytes(group_graph.read_bytes() + b"\0")
    with pytest.raises(UserError, match="model.int8.g3.plan' is stale: 'model.int8.trt.g3.onnx' changed"):
        load_checked_group(plan, 3, TRT_VERSION, GPU)
    assert load_checked_group(plan, 0, TRT_VERSION, GPU) == info  # an untouched group still loads


def test_plan_info_with_groups_round_trips_and_old_records_load() -> None:
    group = GroupEngine(0, 249, "model.int8.g0.plan", "a" * 64, 10, "model.int8.trt.g0.onnx",
                        "model.int8.trt.groups.data", "b" * 64, {"layers": 3}, 2.0)
    later = GroupEngine(250, 999, "model.int8.g1.plan", "c" * 64, 11, "model.int8.trt.g1.onnx",
                        "model.int8.trt.groups.data", "d" * 64)
    info = PlanInfo("int8", TRT_VERSION, GPU, [], "model.int8.trt.onnx", "e" * 64, True,
                    timestep_groups=(group, later))
    assert PlanInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
    assert info.group_bounds == [(0, 249), (250, 999)]
    plain = json.loads(json.dumps(info.to_json()))
    del plain["timestep_groups"]  # a .plan.json written before grouped builds
    assert PlanInfo.from_json(plain).timestep_groups == ()
    with pytest.raises(ValueError, match="overlap or are not ascending"):
        PlanInfo("int8", TRT_VERSION, GPU, [], "m.onnx", "e" * 64, True, timestep_groups=(later, group))
    with pytest.raises(ValueError, match="must be a file name beside the global engine"):
        GroupEngine(0, 1, "../x.plan", "a" * 64, 1, "g.onnx", "d.data", "b" * 64)


class RecordingTrtSession(TrtSession):
    """TrtSession with TensorRT's parts replaced: activation runs the real checker (this TensorRT version and GPU
    faked), a run returns the engine's group number and records the time step."""

    def activate(self) -> RecordingTrtSession:
        self.info = self.checker(TRT_VERSION, GPU) if self.checker is not None else None
        self._engine = object()  # type: ignore[assignment]
        self._inputs, self._outputs = ["sample", "timestep"], ["out"]
        self.seen: list[float] = []
        return self

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(float(feeds["timestep"][0]))
        return {"out": np.zeros_like(feeds["sample"])}


def test_backend_trt_routes_each_step_to_its_group_engine(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, info, _ = _build(work, monkeypatch)
    import engines.tensorrt.session

    monkeypatch.setattr(engines.tensorrt.session, "TrtSession", RecordingTrtSession)
    monkeypatch.setattr(backends, "tensorrt_available", lambda: True)
    session, described = backends.open_session(WorkDir(work), "int8", "trt")
    assert isinstance(session, TimestepGroupedSession)
    assert described.startswith(f"TensorRT {TRT_VERSION} (model.int8.plan, 4 time-step group engines [")
    engines_ = [s for s in session.sessions if isinstance(s, RecordingTrtSession)]
    assert [s.plan.name for s in engines_] == [f"model.int8.g{g}.plan" for g in range(4)]
    assert all(isinstance(s.checker, functools.partial) and s.checker.args == (plan, g)
               for g, s in enumerate(engines_))
    export: dict[str, Any] = WorkDir(work).load_export_info()
    with session:
        assert all(s.info == info for s in engines_)  # each checked against the one record on activation
        DenoiseRunner(session, make_scheduler("ddim", export["scheduler"])).sample(
            seeded_noise((1, 16, 16), range(1)), 10)
    seen = [t for s in engines_ for t in s.seen]
    assert len(seen) == 10 and session.calls == [len(s.seen) for s in engines_]
    for g, s in enumerate(engines_):
        assert all(group_index(info.group_bounds, t) == g for t in s.seen)
    assert sum(1 for s in engines_ if s.seen) >= 3  # 10 DDIM steps over t 900..0 reach at least 3 of 4 groups


def test_an_engine_built_before_the_groups_says_so(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeBuild()
    fake(WorkDir(work), _options(work))  # build_engine alone: no group engines
    import engines.tensorrt.session

    monkeypatch.setattr(engines.tensorrt.session, "TrtSession", RecordingTrtSession)
    monkeypatch.setattr(backends, "tensorrt_available", lambda: True)
    session, described = backends.open_session(WorkDir(work), "int8", "trt")
    assert isinstance(session, RecordingTrtSession)
    assert "the folder has time-step group graphs but this engine was built before them" in described


def test_build_lints_every_group_graph_before_tensorrt(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A group graph that breaks TensorRT's Q/DQ rules is refused by name, before TensorRT is looked for."""
    # group 1 replaced by the onnxruntime-target group graph (its weights in model.int8.ort.groups.data, beside it)
    shutil.copy(work / "model.int8.ort.g1.onnx", work / "model.int8.trt.g1.onnx")
    assert run_cli("build", work, "--precision", "int8") == 2
    err = capsys.readouterr().err
    assert "'model.int8.trt.g1.onnx' breaks" in err and "of TensorRT's Q/DQ rules" in err
    assert not list(work.glob("*.plan*"))
