"""FID from a user's local ONNX feature extractor (a tiny one built in code stands in for Inception)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from common.errors import UserError
from validation.inception import inception_features
from validation.validate import image_metrics


def feature_model(path: Path, size: int = 16) -> Path:
    """N×3×size×size -> global average pool per channel and a fixed linear map to 8 features."""
    w = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("GlobalAveragePool", ["x"], ["p"]), h.make_node("Flatten", ["p"], ["f"]),
         h.make_node("MatMul", ["f", "w"], ["y"])],
        "features", [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, size, size])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 8])], [nh.from_array(w, "w")])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_features_resize_and_repeat_grey(tmp_path: Path) -> None:
    path = feature_model(tmp_path / "inception.onnx")
    grey = np.random.default_rng(1).random((5, 1, 32, 32)).astype(np.float32)
    feats = inception_features(path, grey)
    assert feats.shape == (5, 8)
    np.testing.assert_allclose(feats, inception_features(path, np.repeat(grey, 3, axis=1)), rtol=1e-5)


def test_fid_is_zero_for_identical_sets_and_grows_with_shift(tmp_path: Path) -> None:
    path = feature_model(tmp_path / "inception.onnx")
    rng = np.random.default_rng(2)
    a = rng.random((40, 1, 16, 16)).astype(np.float32)
    same = image_metrics(a, a, None, path)
    shifted = image_metrics(a, np.clip(a + 0.2, 0, 1), None, path)
    assert abs(same["fid"]) < 1e-6
    assert shifted["fid"] > 1e-3


def test_missing_file_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--inception-onnx"):
        inception_features(tmp_path / "none.onnx", np.zeros((2, 1, 8, 8), np.float32))
