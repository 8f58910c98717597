"""``python -m tools pipeline``: every stage on a tiny model, outputs where it says."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_cli


def test_pipeline_end_to_end(tiny_unet_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "w"
    code = run_cli("pipeline", "--model", tiny_unet_dir, work, "--steps", "6", "--num", "2", "--samples", "8",
                   "--min-psnr", "0", "--min-cosine", "0.9", "--min-snr", "0")
    assert code == 0
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
