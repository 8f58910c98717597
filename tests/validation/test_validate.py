"""``python -m tools validate``: Polygraphy comparison along the schedule, gates that can fail, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from calibrators.ranges import TensorRanges
from engines.cpu_backend import CPU_NAMES, choose_cpu_backend
from tests.conftest import run_cli
from validation.step_metrics import step_metrics

FAST = ["--steps", "10", "--points", "5", "--num", "2", "--images", "4"]
# Gates the tiny model's INT8 graph passes with FAST, a margin below what it reaches (2-core Xeon with AMX,
# 2026-12-03: worst step cosine 0.996 / SNR 21.0 dB, final-image PSNR 11.4 dB over 4 images on ONNX Runtime; 0.995 /
# 20.3 dB / 10.8 dB on OpenVINO with --reduce-range all). The ranges scaled by 0.5 fail them.
GATES = ["--min-cosine", "0.99", "--min-snr", "18", "--min-psnr", "9"]


@pytest.fixture()
def quantized(tiny_calibrated: Path, tmp_path: Path) -> Path:
    work = tmp_path / "w"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("calib", "report"))
    assert run_cli("quantize", work) == 0
    return work


def test_validate_passes_and_writes_polygraphy_inputs(quantized: Path) -> None:
    assert run_cli("validate", quantized, *FAST, *GATES) == 0
    report = json.loads((quantized / "report" / "validate.json").read_text())
    assert report["passed"] and len(report["steps"]) == 5
    assert report["thresholds"]["min_image_psnr"] == 9.0 and report["images"]["psnr"] >= 9.0
    ts = [s["t"] for s in report["steps"]]
    assert ts == sorted(ts, reverse=True) and ts[0] >= 900 and ts[-1] == 0  # spread over the whole schedule
    assert all(0.9 < s["cosine"] <= 1.0 for s in report["steps"])
    assert {"psnr", "ssim"} <= set(report["images"])
    name = CPU_NAMES[choose_cpu_backend()[0]]  # --backend auto: OpenVINO on VNNI/AMX CPUs when installed
    assert report["backend"] == {"steps": f"{name} (CPU)", "final_images": f"{name} (CPU), the Q/DQ model"}
    # the saved inputs replay in Polygraphy and are the real trajectory states
    from polygraphy.json import load_json

    feeds = load_json(str(quantized / "report" / "validate_inputs.json"))
    assert len(feeds) == 5 and feeds[0]["sample"].shape == (2, 1, 16, 16)
    assert (quantized / "report" / "fp32.png").is_file() and (quantized / "report" / "int8.png").is_file()


def test_validate_on_openvino(quantized: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements.txt)")
    # --reduce-range all: on CPUs without VNNI OpenVINO's INT8 kernels saturate int16 sums of full-range weights
    # (docs/cpu-backends.md); 7-bit weights do not, so the same gates hold on every CPU
    assert run_cli("quantize", quantized, "--reduce-range", "all") == 0
    assert run_cli("validate", quantized, *FAST, "--backend", "openvino", *GATES) == 0
    report = json.loads((quantized / "report" / "validate.json").read_text())
    assert report["backend"]["steps"] == "OpenVINO (CPU)" and report["backend"]["final_images"].startswith("OpenVINO")
    assert report["passed"] and len(report["steps"]) == 5
    assert all(0.99 <= s["cosine"] <= 1.0 for s in report["steps"])
    assert {"psnr", "ssim"} <= set(report["images"])
    assert "on OpenVINO" in capsys.readouterr().out
    assert any((quantized / ".openvino_cache").iterdir())


def test_clipped_model_output_trajectories_are_compared(quantized: Path) -> None:
    """With --use-clipped-model-output the saved inputs are the states of that sampler, not of the default one."""
    from polygraphy.json import load_json

    from engines.ort_session import OrtSession
    from pipelines.runner import DenoiseRunner
    from pipelines.schedulers import make_scheduler

    assert run_cli("validate", quantized, *FAST, "--use-clipped-model-output", "--min-psnr", "5") == 0
    report = json.loads((quantized / "report" / "validate.json").read_text())
    assert report["settings"]["use_clipped_model_output"] is True
    last = load_json(str(quantized / "report" / "validate_inputs.json"))[-1]["sample"]
    info = json.loads((quantized / "export.json").read_text())
    with OrtSession(quantized / "model.onnx") as s:
        runner = DenoiseRunner(s, make_scheduler("ddim", info["scheduler"]), batch_size=2)
        noise = runner.initial_noise((2, 1, 16, 16), 0)
        np.testing.assert_allclose(last, runner.sample(noise, 10, stop_at_step=9, use_clipped_model_output=True),
                                   atol=1e-6)
        assert not np.allclose(last, runner.sample(noise, 10, stop_at_step=9), atol=1e-4)


def test_broken_quantization_fails_the_check(quantized: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ranges scaled by 0.01 clip nearly everything: validate must exit 1."""
    ranges = TensorRanges.load(quantized / "ranges.json")
    broken = TensorRanges(ranges.model_sha256, ranges.settings, {k: v * 0.01 for k, v in ranges.amax.items()})
    broken.save(quantized / "broken.json")
    assert run_cli("quantize", quantized, "--ranges", quantized / "broken.json") == 0
    capsys.readouterr()
    assert run_cli("validate", quantized, *FAST, "--min-cosine", "0.95", "--min-snr", "10", "--min-psnr", "5") == 1
    err = capsys.readouterr().err
    assert "threshold(s) violated" in err and "cosine" in err
    assert json.loads((quantized / "report" / "validate.json").read_text())["passed"] is False


def test_without_quantized_model(tiny_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    shutil.copytree(tiny_work, work, ignore=shutil.ignore_patterns("*.int8.*", "report", "calib"))
    assert run_cli("validate", work, *FAST) == 2
    assert "no int8 model" in capsys.readouterr().err


def test_ranges_of_another_model(quantized: Path, tiny_cond_work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ranges = json.loads((quantized / "ranges.json").read_text())
    ranges["model_sha256"] = json.loads((tiny_cond_work / "export.json").read_text())["onnx"]["sha256"]
    (quantized / "ranges.json").write_text(json.dumps(ranges))
    assert run_cli("validate", quantized, *FAST) == 2
    assert "ranges.json" in capsys.readouterr().err


def test_mismatched_shapes(quantized: Path, tiny_cond_work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(tiny_cond_work / "model.onnx", quantized / "model.int8.ort.onnx")
    (quantized / "quantize.ort.json").unlink()
    assert run_cli("validate", quantized, *FAST) == 2
    err = capsys.readouterr().err
    assert "model.int8.ort.onnx" in err and "shape" in err


def test_step_metrics_closed_forms() -> None:
    r = np.array([3.0, 4.0, 0.0, 0.0])
    m = step_metrics(r, r * 0.5, t=7)
    assert m.cosine == pytest.approx(1.0)
    assert m.snr_db == pytest.approx(10 * np.log10(25 / 6.25))
    assert m.max_abs == pytest.approx(2.0) and m.mean_abs == pytest.approx(3.5 / 4)
    assert m.psnr_db == pytest.approx(20 * np.log10(4.0) - 10 * np.log10(6.25 / 4))
    assert step_metrics(r, -r, t=0).cosine == pytest.approx(-1.0)


def test_off_range_trajectories_are_counted_and_warned(reference_work: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The reference model at DDIM 100 with its clip_sample config: validate counts the FP32 trajectories that leave
    the training range (pipelines/trajectory_health.py) and says how to keep them in."""
    work = tmp_path / "ref"
    shutil.copytree(reference_work, work, ignore=shutil.ignore_patterns("report", "samples"))
    assert run_cli("calibrate", work, "--samples", "16", "--method", "uniform") == 0
    assert run_cli("quantize", work) == 0
    capsys.readouterr()
    assert run_cli("validate", work, "--steps", "100", "--points", "2", "--num", "2", "--images", "16",
                   "--min-psnr", "-1", "--min-cosine", "-1", "--min-snr", "-1") == 0
    images = json.loads((work / "report" / "validate.json").read_text())["images"]
    assert images["fp32_off_range"] >= 2
    out = capsys.readouterr().out
    assert "FP32 warning:" in out and "--use-clipped-model-output" in out


def test_class_conditional_guided_validate_runs(tiny_cond_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A class-conditional UNet2DConditionModel (sequence length 1) validated with 16 conditioning rows, an
    unconditional row and guidance: conditioning rows always follow the images fed (this crashed in ORT's Reshape
    when the rows and the images disagreed), seen in the saved inputs of every compared step."""
    work = tmp_path / "cls"
    assert run_cli("export", "--model", tiny_cond_dir, work, "--cond-len", "1") == 0
    dim = json.loads((work / "export.json").read_text())["inputs"]["encoder_hidden_states"]["shape"][2]
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cond.npy", rng.standard_normal((16, 1, dim)).astype(np.float32))
    np.save(tmp_path / "uncond.npy", np.zeros((1, 1, dim), np.float32))
    cond = ["--cond", tmp_path / "cond.npy", "--guidance-scale", "3"]
    assert run_cli("calibrate", work, "--samples", "8", "--steps", "6", *cond) == 0
    assert run_cli("quantize", work) == 0
    assert run_cli("validate", work, "--steps", "6", "--points", "3", "--num", "3", "--images", "5", *cond,
                   "--uncond", tmp_path / "uncond.npy", "--min-psnr", "-1", "--min-cosine", "-1", "--min-snr", "-1",
                   "--backend", "ort") == 0, capsys.readouterr().err
    report = json.loads((work / "report" / "validate.json").read_text())
    assert report["passed"] and len(report["steps"]) == 3 and report["images"]["num"] == 5
    assert all(np.isfinite(s["cosine"]) and s["cosine"] > 0.5 for s in report["steps"])
    # every compared step fed the UNet the 3 trajectories twice (unconditional rows first) with their own rows
    from polygraphy.json import load_json

    classes = np.load(tmp_path / "cond.npy")
    for feeds in load_json(str(work / "report" / "validate_inputs.json")):
        assert feeds["sample"].shape[0] == 6 and np.array_equal(feeds["sample"][:3], feeds["sample"][3:])
        np.testing.assert_array_equal(feeds["encoder_hidden_states"][:3], np.zeros((3, 1, dim), np.float32))
        np.testing.assert_array_equal(feeds["encoder_hidden_states"][3:], classes[:3])


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_each_step_is_compared_on_its_time_step_groups_graph(tiny_grouped: Path, tmp_path: Path,
                                                             backend: str) -> None:
    """With ``quantize --timestep-groups 4``: every compared step runs on its group's graph, named in validate.json,
    and its metrics are those of that graph (not the global one)."""
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements.txt)")
    from polygraphy.json import load_json

    from engines.group_manifest import grouped_manifest_for
    from engines.ort_session import OrtSession
    from engines.timestep_routed import group_index

    work = tmp_path / "w"
    shutil.copytree(tiny_grouped, work, ignore=shutil.ignore_patterns("report", ".openvino_cache"))
    assert run_cli("validate", work, *FAST, "--backend", backend, "--min-cosine", "-1", "--min-snr", "-1",
                   "--min-psnr", "-1") == 0
    report = json.loads((work / "report" / "validate.json").read_text())
    graph = "model.int8.ort.onnx" if backend == "ort" else "model.int8.trt.onnx"  # OpenVINO: the tensorrt target
    manifest = grouped_manifest_for(work / graph)
    assert manifest is not None and report["quantized_model"] == graph
    assert "time-step group graphs (each step on its group's)" in report["backend"]["steps"]
    assert "4 time-step groups" in report["backend"]["final_images"]
    served = [s["graph"] for s in report["steps"]]
    want = [manifest.groups[group_index(manifest.bounds, s["t"])].model for s in report["steps"]]
    assert served == want and len(set(served)) >= 3  # 5 steps spread over the schedule reach at least 3 of 4 groups
    # the recorded metrics are those of the serving group graph (ONNX Runtime: bit-exact rerun)
    if backend == "ort":
        feeds = load_json(str(work / "report" / "validate_inputs.json"))
        global_cosines = []
        for step, feed, name in zip(report["steps"], feeds, served, strict=True):
            with OrtSession(work / "model.onnx") as fp32, OrtSession(work / name) as group, \
                    OrtSession(work / graph) as glob:
                ref = fp32.run(dict(feed))["out"]
                assert step_metrics(ref, group.run(dict(feed))["out"], step["t"]).cosine == step["cosine"]
                global_cosines.append(step_metrics(ref, glob.run(dict(feed))["out"], step["t"]).cosine)
        assert global_cosines != [s["cosine"] for s in report["steps"]]  # the global graph would have given others


def test_without_groups_every_step_names_the_one_graph(quantized: Path) -> None:
    assert run_cli("validate", quantized, *FAST, "--backend", "ort", "--min-cosine", "-1", "--min-snr", "-1",
                   "--min-psnr", "-1") == 0
    report = json.loads((quantized / "report" / "validate.json").read_text())
    assert {s["graph"] for s in report["steps"]} == {report["quantized_model"]}
    assert "group" not in report["backend"]["steps"]


def test_tensorrt_group_engines_serve_their_steps(tiny_grouped: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``validate --backend trt`` on a grouped build: each step goes to ``trt_runner(plan, group=g)`` of its group
    (TensorRT mocked: the runner of group g is ONNX Runtime on group g's graph)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    import engines.tensorrt.polygraphy_loaders
    from engines.group_manifest import grouped_manifest_for
    from engines.tensorrt.plan import GpuInfo, GroupEngine, PlanInfo, write_plan_info
    from validation.validate import compare_steps, quantized_graphs, serving_graph

    manifest = grouped_manifest_for(tiny_grouped / "model.int8.ort.onnx")
    assert manifest is not None
    plan = tmp_path / "model.int8.plan"
    plan.write_bytes(b"engine")
    groups = tuple(GroupEngine(a, b, f"model.int8.g{g}.plan", "0" * 64, 1, f"model.int8.trt.g{g}.onnx",
                               "model.int8.trt.groups.data", "0" * 64) for g, (a, b) in enumerate(manifest.bounds))
    write_plan_info(plan, PlanInfo("int8", "10.13.0.35", GpuInfo("GPU", "9.0"), [], "model.int8.trt.onnx",
                                   "0" * 64, True, timestep_groups=groups))
    graphs = quantized_graphs(tiny_grouped / "model.int8.trt.onnx", plan)
    assert [g.name for g in graphs] == [f"model.int8.g{g}.plan" for g in range(4)]
    asked: list[int | None] = []

    def fake_trt_runner(p: Path, name: str = "quantized", group: int | None = None) -> object:
        assert p == plan
        asked.append(group)
        return OnnxrtRunner(SessionFromOnnx(str(manifest.model_paths(tiny_grouped)[group or 0])), name=name)

    monkeypatch.setattr(engines.tensorrt.polygraphy_loaders, "trt_runner", fake_trt_runner)
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    ts = [manifest.bounds[3][1], manifest.bounds[3][0], manifest.bounds[1][0], manifest.bounds[0][0]]
    feeds = [{"sample": x, "timestep": np.full(2, t, np.float32)} for t in ts]
    assert [serving_graph(graphs, f) for f in feeds] == [3, 3, 1, 0]
    with pytest.raises(ValueError, match="mixes time steps of groups 0 and 3"):
        serving_graph(graphs, {"timestep": np.array(ts[::3], np.float32)})
    result = compare_steps(tiny_grouped / "model.onnx", tiny_grouped / "model.int8.trt.onnx", feeds,
                           tmp_path / "inputs.json", plan=plan)
    assert asked == [0, 1, 3] and result.grouped  # one Comparator run per group that has steps
    assert result.graphs == ["model.int8.g3.plan", "model.int8.g3.plan", "model.int8.g1.plan", "model.int8.g0.plan"]
    assert [m.t for m in result.metrics] == ts  # in feed order
