"""Recognising text-to-image pipeline folders; a folder missing its tokenizer or VAE is one line, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporter.pipeline_folder import locate_pipeline
from tests.conftest import run_cli


def test_unconditional_pipeline_is_not_text_to_image(tiny_unet_dir: Path) -> None:
    assert locate_pipeline(tiny_unet_dir) is None


def test_sd_and_sdxl_are_recognised(tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> None:
    sd, xl = locate_pipeline(tiny_sd_dir), locate_pipeline(tiny_sdxl_dir)
    assert sd is not None and xl is not None
    assert [e.name for e in sd.text_encoders] == ["text_encoder"] and sd.family.name == "sd"
    assert [e.name for e in xl.text_encoders] == ["text_encoder", "text_encoder_2"] and xl.family.name == "sdxl"
    assert xl.force_zeros_for_empty_prompt and not sd.force_zeros_for_empty_prompt


@pytest.mark.parametrize("missing, words", [("tokenizer", "no tokenizer"), ("vae", "no VAE")])
def test_missing_component_is_one_line(tiny_sd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       missing: str, words: str) -> None:
    pipe = tmp_path / "pipe"
    shutil.copytree(tiny_sd_dir, pipe)
    shutil.rmtree(pipe / missing)
    assert run_cli("export", "--model", pipe, tmp_path / "w") == 2
    err = capsys.readouterr().err.strip()
    assert words in err and str(pipe / missing) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
