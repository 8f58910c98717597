"""Locating diffusers UNet folders: pipeline folders, plain UNet folders, and what is not a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import UserError
from exporter.loading import load_unet, locate_model


def test_pipeline_folder_finds_unet_and_scheduler(tiny_unet_dir: Path) -> None:
    src = locate_model(tiny_unet_dir)
    assert src.class_name == "UNet2DModel"
    assert src.unet_dir == tiny_unet_dir / "unet"
    assert src.scheduler_config["_class_name"] == "DDPMScheduler"
    assert src.scheduler_source.endswith("scheduler_config.json")
    assert len(src.weights_sha256()) == 64


def test_plain_unet_folder_gets_default_scheduler(tiny_cond_dir: Path) -> None:
    src = locate_model(tiny_cond_dir)
    assert src.class_name == "UNet2DConditionModel"
    assert src.scheduler_source.startswith("default:")
    assert src.scheduler_config["beta_schedule"] == "scaled_linear"


def test_loaded_unet_is_fp32_eval(tiny_unet_dir: Path) -> None:
    unet = load_unet(locate_model(tiny_unet_dir))
    assert not unet.training
    assert all(str(p.dtype) == "torch.float32" for p in unet.parameters())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "is not a diffusers UNet folder"),
        (lambda d: _write(d / "config.json", {"_class_name": "AutoencoderKL"}), "is not a diffusers UNet folder"),
        (lambda d: _write(d / "config.json", "{not json"), "cannot read"),
        (lambda d: _write(d / "config.json", {"_class_name": "UNet2DModel"}), "no weights"),
    ],
)
def test_bad_folders_are_user_errors(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    target = make(tmp_path)
    with pytest.raises(UserError, match=message):
        locate_model(target)


def test_corrupt_weights_are_user_error(tmp_path: Path, tiny_unet_dir: Path) -> None:
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text((tiny_unet_dir / "unet" / "config.json").read_text())
    (unet / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="cannot load the UNet"):
        load_unet(locate_model(tmp_path))


def _write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path.parent
