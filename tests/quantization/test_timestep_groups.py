"""``quantize --timestep-groups K``: K graphs that differ only in activation scales, weights stored once, the
manifest, routing by t through sample, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calibrators.ranges import TensorRanges
from common.workdir import WorkDir
from engines.backends import onnx_session
from engines.group_manifest import GroupManifest, manifest_path
from engines.ort_session import OrtSession
from engines.timestep_routed import TimestepGroupedSession
from quantization.qdq_policy import QDQPolicy
from quantization.record import QuantizeRecord
from quantization.timestep_groups import quantize_groups, ranges_for_group
from tests.conftest import run_cli


@pytest.fixture()
def work(tiny_calibrated: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "w"
    shutil.copytree(tiny_calibrated, dest, ignore=shutil.ignore_patterns("calib", "report", "*.int8.*",
                                                                         "quantize*.json"))
    return dest


def _scales(path: Path) -> dict[str, np.ndarray]:
    """Activation scales: the scale initializers of QuantizeLinear nodes (per-tensor), by the quantized tensor."""
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    return {n.input[0]: numpy_helper.to_array(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits}


def _weights(path: Path) -> dict[str, bytes]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2}


def test_groups_differ_in_scales_only_and_share_weights(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ranges = TensorRanges.load(work / "ranges.json")
    assert len(ranges.group_bounds) == 4
    assert run_cli("quantize", work, "--timestep-groups", "4") == 0
    assert "stored once" in capsys.readouterr().out
    manifest = GroupManifest.load(manifest_path(work / "model.int8.ort.onnx"))
    assert manifest.bounds == ranges.group_bounds and manifest.target == "onnxruntime"
    paths = manifest.model_paths(work)
    scales = [_scales(p) for p in paths]
    weights = [_weights(p) for p in paths]
    assert all(w == weights[0] for w in weights) and weights[0]  # the same INT8 weights in every group
    assert all(s.keys() == scales[0].keys() for s in scales)
    # each group's activation scale is its group amax / 127, and at least one tensor differs between groups
    for g, s in enumerate(scales):
        for name, scale in s.items():
            if name in ranges.group_amax:
                assert float(scale) == pytest.approx(ranges.group_amax[name][g] / 127, rel=1e-6)
    assert any(not np.array_equal(scales[0][n], scales[-1][n]) for n in scales[0])
    # weights stored once: every large initializer of a group graph lives in the shared file, none inline
    data = work / manifest.shared_data
    for p in paths:
        m = onnx.load(str(p), load_external_data=False)
        big_inline = [t.name for t in m.graph.initializer
                      if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) >= 1024
                      and t.data_type == onnx.TensorProto.INT8]
        assert not big_inline
        assert {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"} == {data.name}
    record = QuantizeRecord.load(work / "quantize.ort.json")
    assert record.timestep_groups["shared_data_bytes"] == data.stat().st_size > 0
    assert record.activation_scales.startswith("global")
    assert [g["model"] for g in record.timestep_groups["groups"]] == [p.name for p in paths]
    assert "group_amax[2]" in record.timestep_groups["groups"][2]["activation_scales"]
    assert QuantizeRecord.from_json(record.to_json()).timestep_groups == record.timestep_groups


def test_one_group_is_the_global_graph(work: Path) -> None:
    assert run_cli("calibrate", work, "--method", "uniform", "--samples", "16", "--steps", "10",
                   "--aggregation", "groups", "--groups", "1") == 0
    ranges = TensorRanges.load(work / "ranges.json")
    assert ranges_for_group(ranges, 0).amax == ranges.amax
    assert run_cli("quantize", work, "--timestep-groups", "1") == 0
    assert _scales(work / "model.int8.ort.g0.onnx").keys() == _scales(work / "model.int8.ort.onnx").keys()
    for name, s in _scales(work / "model.int8.ort.onnx").items():
        assert np.array_equal(s, _scales(work / "model.int8.ort.g0.onnx")[name])


def test_routing_picks_the_group_of_each_step(work: Path) -> None:
    assert run_cli("quantize", work, "--timestep-groups", "4") == 0
    model = work / "model.int8.ort.onnx"
    session = onnx_session(model)
    assert isinstance(session, TimestepGroupedSession)
    manifest = GroupManifest.load(manifest_path(model))
    c, h, w = WorkDir(work).load_export_info()["inputs"]["sample"]["shape"][1:]
    x = np.random.default_rng(0).standard_normal((2, c, h, w)).astype(np.float32)
    with session:
        for g, (first, last) in enumerate(manifest.bounds):
            for t in (first, last):
                feeds = {"sample": x, "timestep": np.full((2,), t, np.float32)}
                with OrtSession(manifest.model_paths(work)[g]) as alone:
                    want = alone.run(feeds)["out"]
                assert session.group_for(feeds) == g
                np.testing.assert_array_equal(session.run(feeds)["out"], want)
        with pytest.raises(ValueError, match="mixes time steps"):
            session.run({"sample": x, "timestep": np.array([manifest.bounds[0][0], manifest.bounds[-1][1]],
                                                          np.float32)})


def test_sample_routes_and_plain_quantize_removes_the_groups(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--timestep-groups", "4") == 0
    assert run_cli("sample", work, "--precision", "int8", "--num", "1", "--steps", "4", "--backend", "ort") == 0
    assert "4 time-step groups" in capsys.readouterr().out
    assert run_cli("quantize", work) == 0  # a plain quantize: the old group set would be stale
    assert not manifest_path(work / "model.int8.ort.onnx").exists()
    assert not list(work.glob("model.int8.ort.g*.onnx")) and not list(work.glob("*.groups.data"))
    assert isinstance(onnx_session(work / "model.int8.ort.onnx"), OrtSession)


def test_bad_input(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--timestep-groups", "2") == 2
    err = capsys.readouterr().err
    assert "4 time-step groups" in err and "--groups 2" in err
    assert not list(work.glob("model.int8*"))
    assert run_cli("quantize", work, "--timestep-groups", "0") == 2
    assert ">= 1" in capsys.readouterr().err
    assert run_cli("quantize", work, "--timestep-groups", "4", "--weight-rounding", "adaround") == 2
    assert "adaround" in capsys.readouterr().err
    ranges = TensorRanges.load(work / "ranges.json")
    with pytest.raises(Exception, match="no time-step groups"):
        quantize_groups(onnx.load(str(work / "model.onnx")), ranges_for_group(ranges, 0), QDQPolicy(), 4)


def test_manifest_round_trip_and_bad_manifests(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--timestep-groups", "4") == 0
    path = manifest_path(work / "model.int8.ort.onnx")
    manifest = GroupManifest.load(path)
    assert GroupManifest.from_json(manifest.to_json()) == manifest
    data = json.loads(path.read_text())
    data["groups"][1]["first_t"] = data["groups"][0]["last_t"]  # overlapping groups
    path.write_text(json.dumps(data))
    assert run_cli("sample", work, "--precision", "int8", "--num", "1", "--steps", "2", "--backend", "ort") == 2
    err = capsys.readouterr().err.strip()
    assert "overlaps" in err and str(path) in err and len(err.splitlines()) == 1
    path.write_text(json.dumps(manifest.to_json()))
    (work / manifest.groups[2].model).unlink()
    assert run_cli("sample", work, "--precision", "int8", "--num", "1", "--steps", "2", "--backend", "ort") == 2
    assert manifest.groups[2].model in capsys.readouterr().err
