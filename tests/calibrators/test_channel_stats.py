"""Per-channel abs-max over calibration samples: the last axis kept, everything else reduced, maxima over samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibrators.channel_stats import channel_absmax
from calibrators.sample import CalibSample
from common.errors import UserError


def tiny_model() -> object:
    """sample (B,2,3) * w (3,) -> m; m + t (broadcast per row) -> out."""
    w = numpy_helper.from_array(np.array([1.0, -10.0, 0.5], np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape")
    nodes = [helper.make_node("Mul", ["sample", "w"], ["m"]),
             helper.make_node("Reshape", ["timestep", "shape"], ["tb"]),
             helper.make_node("Add", ["m", "tb"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["b", 2, 3]),
                                           helper.make_tensor_value_info("timestep", TensorProto.FLOAT, ["b"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 2, 3])], [w, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_channel_absmax_reduces_every_axis_but_the_last(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = [CalibSample(rng.standard_normal((1, 2, 3)).astype(np.float32), t=t, step=i)
               for i, t in enumerate((900, 500, 500, 100, 10))]
    got = channel_absmax(tiny_model(), tmp_path, samples, ["m", "out"], batch_rows=2, progress=False)  # type: ignore[arg-type]
    xs = np.concatenate([s.x for s in samples])
    m = xs * np.array([1.0, -10.0, 0.5])
    out = m + np.array([s.t for s in samples], dtype=np.float64).reshape(-1, 1, 1)
    np.testing.assert_allclose(got["m"], np.abs(m).max(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(got["out"], np.abs(out).max(axis=(0, 1)), rtol=1e-6)
    assert got["m"].shape == (3,) and got["m"].dtype == np.float64


def test_no_samples_is_a_user_error(tmp_path: Path) -> None:
    assert channel_absmax(tiny_model(), tmp_path, [], [], progress=False) == {}  # type: ignore[arg-type]
    with pytest.raises(UserError, match="samples"):
        channel_absmax(tiny_model(), tmp_path, [], ["m"], progress=False)  # type: ignore[arg-type]
