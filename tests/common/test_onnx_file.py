"""Reading an ONNX file the user named: a bad file is one UserError naming it; a bug stays a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from common.errors import UserError
from common.onnx_file import load_onnx


def _model_with_external_data(folder: Path) -> Path:
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])], [weight])
    path = folder / "m.onnx"
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    return path


def test_good_bad_and_incomplete_files(tmp_path: Path) -> None:
    path = _model_with_external_data(tmp_path)
    assert load_onnx(path, external_data=True).graph.initializer[0].raw_data == np.ones((64, 64), np.float32).tobytes()
    (tmp_path / "m.onnx.data").unlink()
    assert load_onnx(path).graph.node[0].op_type == "Identity"  # the graph alone needs no weights
    with pytest.raises(UserError, match=r"^cannot read ONNX model '.*m\.onnx': .*m\.onnx\.data"):
        load_onnx(path, external_data=True)
    garbage = tmp_path / "g.onnx"
    garbage.write_bytes(b"\x08\x01garbage\xff")
    with pytest.raises(UserError, match=r"^cannot read ONNX model '.*g\.onnx': "):
        load_onnx(garbage)
    with pytest.raises(UserError, match=r"^cannot read ONNX model '.*none\.onnx': "):
        load_onnx(tmp_path / "none.onnx")


def test_a_bug_is_not_a_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("load() got an unexpected keyword argument")

    monkeypatch.setattr(onnx, "load", broken)
    with pytest.raises(TypeError, match="unexpected keyword"):
        load_onnx(tmp_path / "m.onnx")
