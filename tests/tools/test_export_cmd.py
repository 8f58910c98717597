"""``python -m tools export``: bad input exits 2 with one line naming the culprit and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_missing_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("export", "--model", tmp_path / "nope", tmp_path / "w") == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "does not exist" in err and len(err.splitlines()) == 1
    assert _listing(tmp_path) == []


def test_not_a_diffusers_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "readme.txt").write_text("hello")
    assert run_cli("export", "--model", tmp_path / "m", tmp_path / "w") == 2
    assert "not a diffusers UNet folder" in capsys.readouterr().err
    assert _listing(tmp_path) == ["m"]


def test_unknown_arch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("export", "--arch", "sdxl-turbo", tmp_path / "w") == 2
    err = capsys.readouterr().err
    assert "sdxl-turbo" in err and "ddpm-cifar10" in err and "sd15-unet" in err
    assert _listing(tmp_path) == []


def test_non_empty_work_needs_force(tiny_unet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    assert run_cli("export", "--model", tiny_unet_dir, work) == 2
    assert "not empty" in capsys.readouterr().err
    assert _listing(work) == ["keep.txt"]
    assert run_cli("export", "--model", tiny_unet_dir, work, "--force") == 0
    assert _listing(work) == ["export.json", "model.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no temporary folder left beside it


def test_unwritable_work(tiny_unet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run_cli("export", "--model", tiny_unet_dir, blocker / "w") == 2
    assert "cannot write WORK" in capsys.readouterr().err


def test_failed_verification_leaves_nothing(
    tiny_unet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tolerance no export can meet makes the check fail (exit 1) and nothing is written."""
    assert run_cli("export", "--model", tiny_unet_dir, tmp_path / "w", "--tolerance", "0") == 1
    assert "max relative error" in capsys.readouterr().err
    assert _listing(tmp_path) == []


def test_force_keeps_the_old_folder_until_the_new_export_is_verified(
    tiny_unet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``export --force`` over a work folder whose new export fails its check: the old folder is left as it was."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    assert run_cli("export", "--model", tiny_unet_dir, work, "--force", "--tolerance", "0") == 1
    assert _listing(work) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_entry_point_prints_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools", "export", "--arch", "nope", str(tmp_path / "w")],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]


def test_bad_flag_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools", "export", "--arch", "ddpm-cifar10", str(tmp_path / "w"), "--opset", "x"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--opset" in proc.stderr
    assert not (tmp_path / "w").exists()
