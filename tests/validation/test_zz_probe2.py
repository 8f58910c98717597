import json, shutil
from pathlib import Path
import numpy as np, onnx
from tests.conftest import run_cli


def test_probe_fp16(tiny_work: Path, tmp_path: Path) -> None:
    from engines.tensorrt.fp16_convert import convert_to_fp16
    from tests.engines.tensorrt.test_fp16_convert import _session, _feeds
    work = tmp_path / "w"
    work.mkdir()
    for name in ("export.json", "model.onnx"):
        shutil.copy(tiny_work / name, work / name)
    assert run_cli("calibrate", work, "--samples", "8", "--steps", "5") == 0
    assert run_cli("quantize", work, "--target", "tensorrt") == 0
    qdq = onnx.load(work / "model.int8.trt.onnx")
    fp16, report = convert_to_fp16(qdq)
    s_qdq, s16 = _session(qdq), _session(fp16)
    feeds = _feeds(s_qdq)
    q32, q16 = s_qdq.run(None, feeds)[0], s16.run(None, feeds)[0]
    f32 = _session(onnx.load(work / "model.onnx")).run(None, feeds)[0]
    print("PROBE fp16 rel", float(np.linalg.norm(q16 - q32) / np.linalg.norm(q32)), "int8 vs fp32", float(np.linalg.norm(q32 - f32) / np.linalg.norm(f32)))


def test_probe_pipeline(tiny_unet_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    code = run_cli("pipeline", "--model", tiny_unet_dir, work, "--steps", "6", "--num", "2", "--samples", "8",
                   "--min-psnr", "-1", "--min-cosine", "-1", "--min-snr", "-1")
    r = json.loads((work / "report" / "validate.json").read_text())
    print("PROBE pipeline", code, [(round(s["cosine"], 4), round(s["snr_db"], 2)) for s in r["steps"]], r["images"], r.get("backend"))
