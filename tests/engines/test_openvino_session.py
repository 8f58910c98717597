"""OpenVinoSession: the Session protocol, FP32 against ONNX Runtime, a Q/DQ model, dynamic batch, the model cache,
explicit threads and precision, and the install hint when openvino is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from engines.openvino_session import OpenVinoSession
from engines.ort_session import OrtSession
from engines.session import Session
from tests.conftest import run_cli

pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements.txt)")


def feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"sample": rng.standard_normal((batch, 1, 16, 16)).astype(np.float32),
            "timestep": np.linspace(1, 999, batch).astype(np.float32)}


@pytest.fixture(scope="module")
def tiny_int8(tiny_calibrated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny UNet's Q/DQ graph for the onnxruntime target (UINT8 activations, INT32 bias, output Q/DQ)."""
    out = tmp_path_factory.mktemp("ov") / "model.int8.onnx"
    assert run_cli("quantize", tiny_calibrated, "--target", "onnxruntime", "--out", out) == 0
    return out


@pytest.fixture(scope="module", params=["all", "pairs"])
def tiny_int8_reduced(request: pytest.FixtureRequest, tiny_calibrated: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same graph quantized with ``--reduce-range all`` (8-bit weights in [-64, 64]) and ``pairs``
    (convolution codes whose input-channel pairs sum to at most 128 in magnitude)."""
    out = tmp_path_factory.mktemp("ov") / f"model.int8.{request.param}.onnx"
    assert run_cli("quantize", tiny_calibrated, "--target", "onnxruntime", "--reduce-range", request.param,
                   "--out", out) == 0
    return out


def test_fp32_matches_onnx_runtime(tiny_work: Path) -> None:
    with OpenVinoSession(tiny_work / "model.onnx", threads=1) as ov, OrtSession(tiny_work / "model.onnx") as ort:
        assert isinstance(ov, Session)
        assert ov.input_names == ["sample", "timestep"] and ov.output_names == ["out"]
        f = feeds(3)
        np.testing.assert_allclose(ov.run(f)["out"], ort.run(f)["out"], rtol=1e-4, atol=1e-4)
        assert ov.inference_time > 0


def test_dynamic_batch(tiny_work: Path) -> None:
    with OpenVinoSession(tiny_work / "model.onnx") as ov:
        assert ov.run(feeds(1))["out"].shape == (1, 1, 16, 16)
        assert ov.run(feeds(5))["out"].shape == (5, 1, 16, 16)


def test_outputs_are_not_overwritten_by_the_next_run(tiny_work: Path) -> None:
    with OpenVinoSession(tiny_work / "model.onnx") as ov:
        first = ov.run(feeds(2, seed=1))["out"]
        kept = first.copy()
        ov.run(feeds(2, seed=2))
        np.testing.assert_array_equal(first, kept)


def test_threads_and_f32_precision_are_explicit(tiny_work: Path) -> None:
    with OpenVinoSession(tiny_work / "model.onnx", threads=1) as ov:
        assert int(ov.property("INFERENCE_NUM_THREADS")) == 1
        import openvino

        assert ov.property("INFERENCE_PRECISION_HINT") == openvino.Type.f32


def test_int8_qdq_model_computes_the_graph_meaning(tiny_int8_reduced: Path) -> None:
    """OpenVINO's INT8 kernels against the Q/DQ graph run unfused (ONNX Runtime, basic optimisations: the graph's
    exact meaning). ``--reduce-range`` weights (all or pairs), so that CPUs without VNNI (int16 pair sums,
    docs/cpu-backends.md) compute it too."""
    import onnxruntime

    from engines.ort_session import session_options

    w7 = tiny_int8_reduced
    unfused = session_options(1)
    unfused.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    f = feeds(4)
    with OpenVinoSession(w7) as ov, OrtSession(w7, options=unfused) as meaning:
        a, b = ov.run(f)["out"].ravel(), meaning.run(f)["out"].ravel()
    assert np.all(np.isfinite(a))
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine > 0.995, cosine


def test_second_compile_is_a_cache_hit(tiny_int8: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with OpenVinoSession(tiny_int8, cache_dir=cache) as first:
        assert not first.loaded_from_cache
    blobs = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert blobs, "compiling wrote nothing into the cache folder"
    mtimes = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    with OpenVinoSession(tiny_int8, cache_dir=cache) as second:
        assert second.loaded_from_cache
        assert second.run(feeds(2))["out"].shape == (2, 1, 16, 16)
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == blobs
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == mtimes


def test_missing_model_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        OpenVinoSession(tmp_path / "none.onnx").activate()


def test_truncated_model_is_user_error(tiny_work: Path, tmp_path: Path) -> None:
    data = (tiny_work / "model.onnx").read_bytes()
    (tmp_path / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot load ONNX model .*model.onnx.* OpenVINO: ") as err:
        OpenVinoSession(tmp_path / "model.onnx", cache_dir=tmp_path / "cache").activate()
    assert len(str(err.value).splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no empty cache folder left behind


def test_a_bug_while_compiling_stays_a_traceback(tiny_work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only OpenVINO's RuntimeError for a model it cannot read or compile becomes "cannot load ONNX model"."""
    import engines.openvino_session as module

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("compile_config() takes 2 positional arguments")

    monkeypatch.setattr(module, "compile_config", broken)
    with pytest.raises(TypeError, match="compile_config"):
        OpenVinoSession(tiny_work / "model.onnx").activate()


def test_missing_openvino_gives_the_install_hint(tiny_work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(UserError, match=r"pip install openvino=="):
        OpenVinoSession(tiny_work / "model.onnx").activate()
