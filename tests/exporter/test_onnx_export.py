"""ONNX export: numerics against PyTorch, dynamic batch, external data, and a check that can fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engines.ort_session import OrtSession
from exporter.onnx_export import ExportShapes, example_inputs, save_model, shapes_for
from exporter.verify import verify_export
from tests.conftest import TINY_COND, TINY_COND_LEN, build_unet


def test_export_json_records_provenance(tiny_work: Path) -> None:
    info = json.loads((tiny_work / "export.json").read_text())
    assert info["model_class"] == "UNet2DModel"
    assert info["onnx"]["opset"] == 17
    assert len(info["source"]["weights_sha256"]) == 64
    assert info["inputs"]["sample"]["shape"] == ["batch", 1, 16, 16]
    assert info["verification"]["max_rel_error"] < 1e-4
    assert len(info["verification"]["timesteps"]) == 3
    assert info["scheduler"]["_class_name"] == "DDPMScheduler"
    assert set(info["versions"]) >= {"torch", "diffusers", "onnx", "onnxruntime"}


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_matches_torch(tiny_work: Path, tiny_unet_dir: Path, batch: int) -> None:
    from exporter.loading import load_unet, locate_model

    unet = load_unet(locate_model(tiny_unet_dir))
    shapes = shapes_for(unet)
    feeds = example_inputs(shapes, batch, [float(37 * (i + 1)) for i in range(batch)], seed=5)
    with OrtSession(tiny_work / "model.onnx") as s:
        got = s.run(feeds)["out"]
    with torch.no_grad():
        ref = unet(torch.from_numpy(feeds["sample"]), torch.from_numpy(feeds["timestep"])).sample.numpy()
    assert got.shape == (batch, 1, 16, 16)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_conditional_export_has_three_inputs(tiny_cond_work: Path) -> None:
    model = onnx.load(str(tiny_cond_work / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["sample", "timestep", "encoder_hidden_states"]
    assert [o.name for o in model.graph.output] == ["out"]
    info = json.loads((tiny_cond_work / "export.json").read_text())
    assert info["inputs"]["encoder_hidden_states"]["shape"] == ["batch", TINY_COND_LEN, 12]
    assert info["verification"]["max_rel_error"] < 1e-4


def test_verify_detects_a_wrong_model(tiny_cond_work: Path) -> None:
    """Verification compares against a *different* PyTorch model: it must report a large error."""
    other = build_unet(TINY_COND, True, seed=1)
    shapes = shapes_for(other, TINY_COND_LEN)
    result = verify_export(other, tiny_cond_work / "model.onnx", shapes, [1.0, 500.0, 999.0], tolerance=1e-3)
    assert not result.ok and result.max_rel_error > 1e-2


def test_external_data_round_trip(tiny_work: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_work / "model.onnx"))
    out = tmp_path / "model.onnx"
    save_model(model, out, external=True)
    assert (tmp_path / "model.onnx.data").stat().st_size > 0.9 * sum(
        init.ByteSize() for init in model.graph.initializer if init.ByteSize() > 1024
    )
    assert out.stat().st_size < 200_000
    feeds = example_inputs(ExportShapes(1, 16, 16), 2, [3.0, 900.0], seed=0)
    with OrtSession(tiny_work / "model.onnx") as a, OrtSession(out) as b:
        np.testing.assert_array_equal(a.run(feeds)["out"], b.run(feeds)["out"])
