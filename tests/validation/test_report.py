"""``python -m tools report``: one self-contained index.html, rendered by headless Chromium and checked not blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from calibrators.ranges import TensorRanges
from common.hashing import onnx_model_sha256, sha256_files
from common.images import save_grid
from quantization.qdq_policy import QDQPolicy
from tests.conftest import run_cli
from validation.sensitivity import quantized_layers
from validation.sensitivity_file import LayerSensitivity, SensitivityResult

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _colored_grid(path: Path, rgb_lo: tuple[float, ...], rgb_hi: tuple[float, ...]) -> None:
    """An 8-image grid of random pixels with each channel uniform in [lo, hi] (a colour no page element uses)."""
    rng = np.random.default_rng(0)
    lo, hi = np.array(rgb_lo)[None, :, None, None], np.array(rgb_hi)[None, :, None, None]
    save_grid(lo + (hi - lo) * rng.random((8, 3, 16, 16)), path)


def _validate_json(report: Path, with_latency: bool) -> None:
    """A validate.json in the documented format, with magenta (FP32) and green (INT8) grids."""
    _colored_grid(report / "fp32.png", (0.7, 0.0, 0.7), (1.0, 0.15, 1.0))
    _colored_grid(report / "int8.png", (0.0, 0.7, 0.0), (0.15, 1.0, 0.15))
    steps = [{"t": t, "cosine": 0.999 - 1e-4 * i, "psnr_db": 35.0 - i, "snr_db": 25.0 - i, "mean_abs": 0.01 * (i + 1),
              "max_abs": 0.1 * (i + 1)} for i, t in enumerate((980, 740, 500, 260, 0))]
    data = {"schema_version": 1, "steps": steps, "images": {"psnr": 27.5, "ssim": 0.93, "fd_digits": 0.42, "num": 8},
            "grids": {"fp32": "fp32.png", "int8": "int8.png"}, "thresholds": {"min_cosine": 0.99, "min_snr": None},
            "passed": True, "settings": {"num": 2},
            "command": "python -m tools validate WORK --steps 10 <script>", "versions": {"polygraphy": "0.53.6"}}
    if with_latency:
        data["latency"] = [{"backend": "ORT FP32", "batch": 1, "ms": 2.0}, {"backend": "ORT INT8", "batch": 1,
                                                                             "ms": 1.0}]
    (report / "validate.json").write_text(json.dumps(data))


def _sensitivity_json(work: Path) -> list[str]:
    """A sensitivity.json ranking every quantized layer of the tiny model (made-up errors, real names)."""
    model_path = work / "model.onnx"
    layers = quantized_layers(onnx.load(str(model_path)), TensorRanges.load(work / "ranges.json"),
                              QDQPolicy(target="onnxruntime"))
    ranked = tuple(LayerSensitivity(name, op, 1e-3 / (i + 1), 1 - 1e-4 / (i + 1), i + 1)
                   for i, (name, op) in enumerate(layers))
    SensitivityResult(onnx_model_sha256(model_path), sha256_files([work / "ranges.json"]),
                      QDQPolicy(target="onnxruntime").to_json(), {"steps": 6, "num": 2, "timesteps": [980, 0]},
                      ranked, "python -m tools sensitivity WORK").save(work / "report" / "sensitivity.json")
    return [x.node for x in ranked]


@pytest.fixture(scope="module")
def reported(tiny_calibrated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny work folder, quantized, with validate.json, grids, sensitivity.json and index.html."""
    work = tmp_path_factory.mktemp("report") / "w"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("calib", "report", "model.int8*",
                                                                         "quantize*.json"))
    (work / "report").mkdir()
    _sensitivity_json(work)
    assert run_cli("quantize", work, "--keep-float", "2") == 0
    _validate_json(work / "report", with_latency=False)
    assert run_cli("report", work, "--repeats", "2") == 0
    return work


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_is_self_contained(reported: Path) -> None:
    page = (reported / "report" / "index.html").read_text()
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)  # 2 grids, 2 charts
    assert "http://" not in page and "https://" not in page and "file:" not in page
    assert "&lt;script&gt;" in page  # commands are escaped
    from engines.cpu_backend import choose_cpu_backend

    int8_row = "OpenVINO INT8" if choose_cpu_backend()[0] == "openvino" else "ORT INT8"  # report's --backend auto
    for text in ("python -m tools quantize", "validation passed", int8_row, "speed-up (", "27.50", "FD-digits",
                 "polygraphy", "onnxruntime"):
        assert text in page
    assert (reported / "report" / "index.html").stat().st_mode & 0o044  # readable by others: it is a page to share


def test_missing_inputs_become_notes(tiny_calibrated: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("calib", "report", "model.int8*",
                                                                         "quantize*.json"))
    assert run_cli("report", work, "--no-latency") == 0
    page = (work / "report" / "index.html").read_text()
    for hint in ("python -m tools quantize", "python -m tools validate", "python -m tools sensitivity",
                 "not measured"):
        assert hint in page
    assert "<img" not in page


def test_latency_from_validate_json_stale_and_bad_files(reported: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    shutil.copytree(reported, work)
    _validate_json(work / "report", with_latency=True)
    assert run_cli("report", work) == 0
    page = (work / "report" / "index.html").read_text()
    assert "from validate.json" in page and '<td class="num">2.00</td>' in page
    sens = work / "report" / "sensitivity.json"
    sens.write_text(sens.read_text().replace('"model_sha256": "', '"model_sha256": "0'))
    assert run_cli("report", work) == 0
    assert "another model" in (work / "report" / "index.html").read_text()
    (work / "report" / "validate.json").write_text("{not json")
    assert run_cli("report", work) == 2
    assert "validate.json" in capsys.readouterr().err


def test_chromium_renders_a_non_blank_page(reported: Path, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not found: install it with `make chromium` (apt-get install -y chromium)")
    shot = tmp_path / "shot.png"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000",
           f"--screenshot={shot}", (reported / "report" / "index.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert img.shape == (2000, 1200, 3)
    assert img.std() > 30
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1000
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    for name, mask in (("FP32 (magenta)", (r > 150) & (b > 150) & (g < 60)),
                       ("INT8 (green)", (g > 150) & (r < 60) & (b < 60))):
        ys, xs = np.nonzero(mask)
        assert len(ys) > 5000, f"{name} grid not rendered"
        area = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert area.shape[0] > 40 and area.shape[1] > 300, f"{name} grid too small: {area.shape}"
        assert area.std() > 20 and len(np.unique(area.reshape(-1, 3), axis=0)) > 500, f"{name} grid is uniform"
