"""serve/client argument errors: one line, exit 2, before any server starts or any file is written."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import run_cli


def test_serve_rejects_bad_flags_and_folders(tmp_path: Path, tiny_cond_work: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("serve", tmp_path / "missing") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli("serve", tmp_path, "--max-batch", "0") == 2
    assert "--max-batch" in capsys.readouterr().err
    assert run_cli("serve", tmp_path, "--http-port", "8001") == 2
    assert "must differ" in capsys.readouterr().err
    assert run_cli("serve", tiny_cond_work) == 2
    assert "text-conditional" in capsys.readouterr().err


def test_serve_rejects_a_bad_guidance_scale_for_a_text_to_image_folder(tiny_sd_work: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("serve", tiny_sd_work, "--guidance-scale", "-1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--guidance-scale" in err[0], err


def test_serve_rejects_clipped_output_for_a_scheduler_without_it(tiny_work: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("serve", tiny_work, "--scheduler", "euler", "--use-clipped-model-output") == 2
    assert "--use-clipped-model-output" in capsys.readouterr().err


def test_client_rejects_bad_flags_and_an_unreachable_server(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.png"
    assert run_cli("client", "http://127.0.0.1:1", "--seed", "0", "--out", tmp_path / "c.jpg") == 2
    assert "--out" in capsys.readouterr().err
    assert run_cli("client", "ftp://x", "--seed", "0", "--out", out) == 2
    assert "http://" in capsys.readouterr().err
    assert run_cli("client", "http://127.0.0.1:1", "--seed", "-1", "--out", out) == 2
    pytest.importorskip("pytriton")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run_cli("client", f"http://127.0.0.1:{port}", "--seed", "0", "--timeout", "2", "--out", out) == 2
    assert not out.exists()
