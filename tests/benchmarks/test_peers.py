"""benchmarks/peers.py without the peer packages: the install hint, the metrics of a row, the ModelOpt example's
arithmetic and filter as re-stated there."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks import peers
from benchmarks.peers_modelopt import example_filter, min_mean_amax
from common.errors import UserError


def test_missing_peer_package_is_one_line_with_the_install_command() -> None:
    with pytest.raises(UserError, match=r"needs no_such_peer_xyz: install with `\.venv/bin/pip install -r "
                                        r"requirements-peers\.txt`"):
        peers.require_peers(("no_such_peer_xyz",))


def test_main_exits_2_before_any_work_when_a_peer_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    monkeypatch.setattr(peers, "prepare", lambda *a: pytest.fail("prepare ran although nncf is missing"))
    assert peers.main(["--rows", "nncf", "--num", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs nncf" in err[0] and "requirements-peers.txt" in err[0]


def test_row_metrics_pooled_median_worst_and_digit_rate() -> None:
    ref = np.zeros((4, 1, 2, 2), dtype=np.float32)
    img = ref.copy()
    img[1] += 0.1  # MSE 1e-2 -> 20 dB
    img[2] += 0.01  # MSE 1e-4 -> 40 dB
    img[3] += 0.001  # 60 dB; image 0 is exact (PSNR capped, not the worst)
    m = peers.row_metrics(img, ref, np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4]))
    assert m.worst == pytest.approx(20.0, abs=1e-3)
    assert m.pooled == pytest.approx(10 * np.log10(1 / ((1e-2 + 1e-4 + 1e-6) / 4)), abs=1e-3)
    assert m.median > 40.0  # the median of four: between the 40 dB and the 60 dB (or exact) image
    assert m.digit == pytest.approx(0.75)


def test_row_metrics_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        peers.row_metrics(np.zeros((2, 1, 2, 2)), np.zeros((3, 1, 2, 2)), np.zeros(2), np.zeros(2))


def test_best_peer_ignores_our_rows_and_ranks_pooled_and_median_apart() -> None:
    rows = {
        "ours default": peers.Metrics(50.0, 50.0, 40.0, 1.0),
        "ModelOpt FP8, PyTorch": peers.Metrics(40.0, 45.0, 30.0, 1.0),
        "NNCF default preset, OpenVINO": peers.Metrics(42.0, 41.0, 35.0, 1.0),
    }
    assert peers.best_peer(rows, "ours") == ("NNCF default preset, OpenVINO", "ModelOpt FP8, PyTorch")
    with pytest.raises(ValueError, match="no peer rows"):
        peers.best_peer({"ours default": rows["ours default"]}, "ours")


def test_failed_row_shows_its_note_and_no_numbers() -> None:
    b = peers.Built("ModelOpt FP8, ONNX on ORT", "nvidia-modelopt 0.47.0", 0.0, None, "Fail: not a registered op")
    cells = peers.table_row(b, 20, None)
    assert cells[3:7] == ["-", "-", "-", "-"] and cells[-1] == "Fail: not a registered op"


def test_min_mean_divides_by_steps_and_takes_the_minimum_over_the_first_percentile_steps() -> None:
    sums = {0: 4.0, 1: 2.0, 2: 6.0}  # per-step sums of the per-call abs-max
    assert min_mean_amax(sums, total_step=3) == pytest.approx(2.0 / 3)
    assert min_mean_amax(sums, total_step=3, percentile=0.5) == pytest.approx(4.0 / 3)  # int(1.5) = 1 step


def test_example_filter_keeps_the_example_float_set() -> None:
    for name in ("time_embedding.linear_1.input_quantizer", "conv_in.weight_quantizer",
                 "down_blocks.1.resnets.0.time_emb_proj.input_quantizer", "up_blocks.0.resnets.0.conv_shortcut",
                 "conv_out"):
        assert example_filter(name), name
    for name in ("down_blocks.0.resnets.0.conv1.input_quantizer", "mid_block.attentions.0.to_q.weight_quantizer"):
        assert not example_filter(name), name


def test_margins_compare_our_default_with_the_best_peer_per_step_count() -> None:
    at = {peers.OURS_DEFAULT: peers.Metrics(45.0, 47.0, 30.0, 1.0),
          "ours best (time embedding float too)": peers.Metrics(49.0, 49.0, 40.0, 1.0),
          "NNCF default preset, OpenVINO": peers.Metrics(41.0, 46.5, 30.0, 1.0)}
    (row,) = peers.margins({20: at, 50: {peers.OURS_DEFAULT: at[peers.OURS_DEFAULT]}})
    assert row[0] == 20 and row[3] == "+4.00" and row[6] == "+0.50"
    assert row[2] == "NNCF default preset, OpenVINO: 41.00"
