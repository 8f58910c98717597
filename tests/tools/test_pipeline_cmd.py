"""``python -m tools pipeline``: every stage on a tiny model, outputs where it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_cli


# validate's gates in the pipeline, a margin below what the tiny model's INT8 graph reaches with these settings
# (2-core Xeon with AMX, 2026-12-03, --backend auto = OpenVINO: worst step cosine 0.992 / SNR 18.0 dB, final-image
# PSNR 14.4 dB). On CPUs without VNNI/AMX both runtimes' INT8 kernels may saturate int16 sums of full-range weights
# (docs/cpu-backends.md): there only the cosine gate applies.
PIPELINE_GATES = ["--min-cosine", "0.98", "--min-snr", "15", "--min-psnr", "11"]
NO_VNNI_GATES = ["--min-cosine", "0.9", "--min-snr", "-1", "--min-psnr", "-1"]


def test_pipeline_end_to_end(tiny_unet_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from engines.cpu_backend import cpu_vnni_flags

    work = tmp_path / "w"
    gates = PIPELINE_GATES if cpu_vnni_flags() else NO_VNNI_GATES
    code = run_cli("pipeline", "--model", tiny_unet_dir, work, "--steps", "6", "--num", "2", "--samples", "8", *gates)
    assert code == 0
    report = json.loads((work / "report" / "validate.json").read_text())
    assert report["passed"] and report["thresholds"]["min_cosine"] == float(gates[1])
    for name in ("model.onnx", "export.json", "ranges.json", "model.int8.ort.onnx", "quantize.ort.json",
                 "samples/fp32_ddim6.png", "samples/int8_ddim6.png", "samples/fp32_vs_int8_ddim6.png",
                 "samples/int8_ddim6.samples.npy", "report/validate.json", "report/sensitivity.json", "report/index.html"):
        assert (work / name).is_file(), name
    both = Image.open(work / "samples" / "fp32_vs_int8_ddim6.png")
    single = Image.open(work / "samples" / "fp32_ddim6.png")
    assert both.width > 2 * single.width
    assert "outputs in" in capsys.readouterr().out


def test_use_clipped_model_output_reaches_calibration_sampling_and_validation() -> None:
    from tools.pipeline_cmd import parse, stages

    flagged = {name for name, argv in stages(parse(["--model", "m", "w", "--use-clipped-model-output"]))
               if "--use-clipped-model-output" in argv}
    assert flagged == {"calibrate", "sample", "validate", "sensitivity"}
    assert not any("--use-clipped-model-output" in argv for _, argv in stages(parse(["--model", "m", "w"])))


@pytest.mark.parametrize(("flag", "value"), [("--target", "tensorrtx"), ("--method", "ndtcc")])
def test_pipeline_flags_take_the_commands_choices(tmp_path: Path, flag: str, value: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A value the stage would refuse is refused by ``pipeline`` before any stage runs (nothing written)."""
    assert run_cli("pipeline", "--model", tmp_path / "m", tmp_path / "w", flag, value) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and "invalid choice" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_compared_points_never_exceed_the_steps() -> None:
    """validate and sensitivity refuse --points above --steps: a short pipeline run compares every step."""
    from tools.pipeline_cmd import parse, stages

    for steps, points in (("4", "4"), ("50", "5")):
        argv = dict(stages(parse(["--model", "m", "w", "--steps", steps])))
        for name in ("validate", "sensitivity"):
            assert argv[name][argv[name].index("--points") + 1] == points, (name, steps)
