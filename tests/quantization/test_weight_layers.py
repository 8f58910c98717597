"""Matrix form of weights: exact round trips, and the layer list of a plan (split branches included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calibrators.ranges import TensorRanges
from quantization.qdq_insert import plan_qdq
from quantization.qdq_policy import QDQPolicy
from quantization.weight_layers import from_matrix, to_matrix


@pytest.mark.parametrize("op,shape,trans_b,cout", [("Conv", (6, 4, 3, 3), False, 6), ("MatMul", (8, 5), False, 5),
                                                   ("Gemm", (5, 8), True, 5), ("Gemm", (8, 5), False, 5)])
def test_matrix_form_round_trip(op: str, shape: tuple[int, ...], trans_b: bool, cout: int) -> None:
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    m = to_matrix(op, w, trans_b)
    assert m.shape[0] == cout
    assert np.array_equal(from_matrix(op, m, shape, trans_b), w)


def test_plan_layers_cover_every_quantized_weight(tiny_calibrated: Path) -> None:
    model = onnx.load(str(tiny_calibrated / "model.onnx"))
    ranges = TensorRanges.load(tiny_calibrated / "ranges.json")
    policy = QDQPolicy(target="onnxruntime")
    plan = plan_qdq(model, ranges, policy)
    layers = {layer.node: layer for layer in plan.layers(model, policy)}
    assert len(layers) == len(plan.weights) + 2 * len(plan.splits)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for split in plan.splits:
        branches = [layers[f"{split.conv}/split{i}"] for i in range(len(split.branches))]
        whole = np.concatenate([b.w.reshape(b.shape) for b in branches], axis=1)
        assert np.array_equal(whole, inits[nodes[split.conv].input[1]])
        assert [b.input for b in branches] == list(split.branches)
        assert all(b.input_amax == plan.amax[b.input] for b in branches)  # each branch reads its own scale
    convs = [layer for layer in layers.values() if layer.op == "Conv"]
    assert convs and all(layer.conv is not None and layer.qmax == 127 for layer in convs)
