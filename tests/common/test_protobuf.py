"""The one "too big for protobuf" rule: sizes protobuf refuses count as too big; other errors are bugs."""

from __future__ import annotations

import onnx
import pytest
from google.protobuf.message import EncodeError

from common.protobuf import PROTOBUF_LIMIT, fits_protobuf, model_bytes


class _Refuses:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def ByteSize(self) -> int:  # noqa: N802 - protobuf's name
        raise self.error


def test_sizes_and_the_limit() -> None:
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    assert model_bytes(model) == model.ByteSize() > 0 and fits_protobuf(model)
    assert PROTOBUF_LIMIT == 2**31 - 64 * 2**20
    big = _Refuses(EncodeError("Failed to serialize proto"))  # what upb raises for a message above 2 GiB
    assert model_bytes(big) == 2**31 and not fits_protobuf(big)


def test_other_errors_are_not_turned_into_a_size() -> None:
    with pytest.raises(TypeError, match="a bug"):
        model_bytes(_Refuses(TypeError("a bug")))
