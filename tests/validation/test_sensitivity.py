"""Layer sensitivity on the tiny UNet: every quantized layer ranked, deterministic, and ``quantize --keep-float N``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from calibrators.ranges import TensorRanges
from common.errors import UserError
from common.workdir import WorkDir
from quantization.qdq_insert import plan_qdq
from quantization.qdq_policy import QDQPolicy
from tests.conftest import run_cli
from tools.sensitivity_cmd import make_probe, recorded_policy
from validation.sensitivity import ErrorProbe, SensitivityConfig, quantized_layers, rank_layers, single_layer_policy
from validation.sensitivity_file import SensitivityResult

FAST = ("--steps", "6", "--points", "2", "--num", "2")


def _copy(src: Path, dst: Path, keep_report: bool = False) -> Path:
    skip = ["calib", "model.int8*", "quantize*.json"] + ([] if keep_report else ["report"])
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*skip))
    return dst


@pytest.fixture
def work(tiny_calibrated: Path, tmp_path: Path) -> Path:
    """A private copy of the calibrated tiny work folder (commands here write quantize.ort.json and report/)."""
    return _copy(tiny_calibrated, tmp_path / "w")


@pytest.fixture(scope="module")
def ranked_once(tiny_calibrated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny work folder on which ``sensitivity`` ran once."""
    src = _copy(tiny_calibrated, tmp_path_factory.mktemp("sens") / "w")
    assert run_cli("sensitivity", src, *FAST) == 0
    return src


@pytest.fixture
def ranked(ranked_once: Path, tmp_path: Path) -> Path:
    """A private copy of ``ranked_once`` (with its report/sensitivity.json)."""
    return _copy(ranked_once, tmp_path / "w", keep_report=True)


def _layers(work: Path) -> list[tuple[str, str]]:
    model = onnx.load(str(work / "model.onnx"))
    return quantized_layers(model, TensorRanges.load(work / "ranges.json"), recorded_policy(WorkDir(work)))


def _weight_dq_consumers(model: onnx.ModelProto) -> set[str]:
    """Names of nodes with an input made by a DequantizeLinear of a constant (a weight DQ)."""
    inits = {i.name for i in model.graph.initializer}
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    return {n.name for n in model.graph.node if n.op_type != "DequantizeLinear" and set(n.input) & dq_out}


def test_single_layer_policy_quantizes_one_layer(work: Path) -> None:
    model = onnx.load(str(work / "model.onnx"))
    ranges = TensorRanges.load(work / "ranges.json")
    policy = QDQPolicy(target="onnxruntime")
    layers = [name for name, _ in quantized_layers(model, ranges, policy)]
    assert len(layers) > 10 and len(set(layers)) == len(layers)
    for layer in (layers[0], layers[-1]):
        plan = plan_qdq(model, ranges, single_layer_policy(policy, layer, layers))
        assert {node for node, _ in plan.weights} | {s.conv for s in plan.splits} == {layer}


def test_ranking_has_every_layer(ranked: Path) -> None:
    data = json.loads((ranked / "report" / "sensitivity.json").read_text())
    layers = data["layers"]
    assert sorted((x["node"], x["op_type"]) for x in layers) == sorted(_layers(ranked))
    assert [x["rank"] for x in layers] == list(range(1, len(layers) + 1))
    assert all(a["mse"] >= b["mse"] for a, b in zip(layers, layers[1:]))
    assert all(x["mse"] > 0 and 0.9 < x["cosine"] <= 1.0 for x in layers)
    assert data["settings"]["step_indices"] == [0, 5] and data["settings"]["metric"] == "step"
    assert data["policy"]["target"] == "onnxruntime"
    result = SensitivityResult.load(ranked / "report" / "sensitivity.json")
    assert SensitivityResult.from_json(result.to_json(), "x").to_json() == result.to_json()


def _probe(work: Path, metric: str) -> ErrorProbe:
    info = WorkDir(work).load_export_info()
    cfg = SensitivityConfig(steps=6, points=2, num=2, metric=metric) if metric == "step" else \
        SensitivityConfig(steps=2, num=1, metric=metric)
    return make_probe(work / "model.onnx", info, cfg)[0]


def test_ranking_is_deterministic_and_matches_the_command(ranked: Path) -> None:
    layers = json.loads((ranked / "report" / "sensitivity.json").read_text())["layers"]
    some = [x["node"] for x in layers[::10]]  # a spread of ranks; re-measuring all would repeat the command
    model, ranges = onnx.load(str(ranked / "model.onnx")), TensorRanges.load(ranked / "ranges.json")
    policy = QDQPolicy(target="onnxruntime")
    runs = [rank_layers(model, ranges, policy, _probe(ranked, "step"), progress=False, only=some) for _ in range(2)]
    assert runs[0] == runs[1]
    assert [x.node for x in runs[0]] == some  # the same order as in the full ranking
    by_node = {x["node"]: x for x in layers}
    assert [x.mse for x in runs[0]] == pytest.approx([by_node[n]["mse"] for n in some], rel=1e-6)


def test_image_metric_ranks_final_images(ranked: Path) -> None:
    model, ranges = onnx.load(str(ranked / "model.onnx")), TensorRanges.load(ranked / "ranges.json")
    layers = [name for name, _ in _layers(ranked)]
    some = [layers[0], layers[-1]]  # the first and last quantized layers
    result = rank_layers(model, ranges, QDQPolicy(target="onnxruntime"), _probe(ranked, "image"), progress=False,
                         only=some)
    assert sorted(x.node for x in result) == sorted(some) and all(x.mse > 0 for x in result)
    with pytest.raises(UserError, match="not quantized"):
        rank_layers(model, ranges, QDQPolicy(target="onnxruntime"), _probe(ranked, "image"), only=["nope"])


def test_keep_float_n_leaves_exactly_those_layers_without_weight_dq(ranked: Path) -> None:
    work = ranked
    ranked = [x["node"] for x in json.loads((work / "report" / "sensitivity.json").read_text())["layers"]]
    assert run_cli("quantize", work, "--keep-float", "2") == 0
    qmodel = onnx.load(str(work / "model.int8.ort.onnx"))
    weighted = _weight_dq_consumers(qmodel)

    def has_weight_dq(layer: str) -> bool:  # a split shortcut conv lives on as <name>/split<i>
        return layer in weighted or any(w.startswith(f"{layer}/split") for w in weighted)

    assert [n for n in ranked if not has_weight_dq(n)] == ranked[:2]
    record = json.loads((work / "quantize.ort.json").read_text())
    assert record["sensitivity_keep_float"]["nodes"] == ranked[:2]
    assert set(ranked[:2]) <= set(record["policy"]["keep_float"])
    # a later sensitivity run ranks every layer again: the recorded policy minus the layers --keep-float chose
    assert recorded_policy(WorkDir(work)).keep_float == ()


def test_keep_float_skips_layers_the_policy_leaves_float(ranked: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ranked_nodes = [x["node"] for x in json.loads((ranked / "report" / "sensitivity.json").read_text())["layers"]]
    assert run_cli("quantize", ranked, "--keep-float", "1", "--exclude", ranked_nodes[0]) == 0
    record = json.loads((ranked / "quantize.ort.json").read_text())
    assert record["sensitivity_keep_float"]["nodes"] == [ranked_nodes[1]]
    assert "another Q/DQ policy" in capsys.readouterr().out  # ranked without that exclusion


def test_keep_float_without_sensitivity_exits_2(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--keep-float", "2") == 2
    err = capsys.readouterr().err.strip()
    assert "sensitivity.json" in err and len(err.splitlines()) == 1
    assert not (work / "model.int8.ort.onnx").exists() and not (work / "quantize.ort.json").exists()


def test_keep_float_with_sensitivity_of_another_model_exits_2(ranked: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    work = ranked
    path = work / "report" / "sensitivity.json"
    data = json.loads(path.read_text())
    data["model_sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    assert run_cli("quantize", work, "--keep-float", "1") == 2
    assert "another model" in capsys.readouterr().err
    assert run_cli("quantize", work, "--keep-float", "-1") == 2


def test_ranking_in_another_file_feeds_quantize(ranked: Path) -> None:
    out = ranked / "ranking.json"
    (ranked / "report" / "sensitivity.json").rename(out)
    first = json.loads(out.read_text())["layers"][0]["node"]
    assert run_cli("quantize", ranked, "--keep-float", "1", "--sensitivity", out) == 0
    record = json.loads((ranked / "quantize.ort.json").read_text())
    assert record["sensitivity_keep_float"] == {"count": 1, "nodes": [first], "file": str(out)}


@pytest.mark.parametrize("metric", ["step", "image"])
def test_clipped_model_output_reaches_the_probe(ranked: Path, metric: str) -> None:
    """The ranking's inputs follow the sampler the user samples with, and the settings record it."""
    info = WorkDir(ranked).load_export_info()
    cfgs = [SensitivityConfig(steps=6, points=2, num=2, metric=metric, clipped_model_output=flag)
            for flag in (None, True)]
    (plain, _), (clipped, settings) = (make_probe(ranked / "model.onnx", info, cfg) for cfg in cfgs)
    assert settings["use_clipped_model_output"] is True
    if metric == "step":
        assert not np.array_equal(plain.feeds[-1]["sample"], clipped.feeds[-1]["sample"])  # type: ignore[attr-defined]
        return
    # the image probe's FP32 reference is the final sample of the clipped sampler, not of the default one
    from engines.ort_session import OrtSession
    from pipelines.runner import DenoiseRunner
    from pipelines.schedulers import make_scheduler

    with OrtSession(ranked / "model.onnx") as fp32:
        plain.reference(fp32)
        clipped.reference(fp32)
        runner = DenoiseRunner(fp32, make_scheduler("ddim", info["scheduler"]))
        expected = runner.sample(clipped.noise, 6, seed=clipped.seed, use_clipped_model_output=True)  # type: ignore[attr-defined]
    np.testing.assert_allclose(clipped.ref, expected, rtol=0, atol=1e-6)  # type: ignore[attr-defined]
    assert not np.array_equal(clipped.ref, plain.ref)  # type: ignore[attr-defined]


def test_openvino_backend_ranks_like_onnx_runtime(ranked: Path) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements.txt)")
    layers = json.loads((ranked / "report" / "sensitivity.json").read_text())["layers"]
    some = [layers[0]["node"], layers[-1]["node"]]  # the most and the least sensitive layer
    model, ranges = onnx.load(str(ranked / "model.onnx")), TensorRanges.load(ranked / "ranges.json")
    ov = rank_layers(model, ranges, QDQPolicy(target="onnxruntime"), _probe(ranked, "step"), progress=False,
                     only=some, backend="openvino")
    assert [x.node for x in ov] == some
    # the values depend on the CPU (without VNNI OpenVINO's INT8 kernels saturate int16 sums: docs/cpu-backends.md),
    # so only that every single-layer model ran through OpenVINO and gave a usable error
    assert all(np.isfinite(x.mse) and x.mse > 0 and 0.5 < x.cosine <= 1.0 for x in ov)
