"""The one "too big for protobuf" rule: a message of 2 GiB or more cannot be serialised (ONNX models above it keep
their weights in external data), and the limit used everywhere leaves 64 MiB of headroom below that."""

from __future__ import annotations

from typing import Any

#: bytes; an ONNX model this large or larger is saved with external data and shape-inferred on a skeleton.
PROTOBUF_LIMIT = 2**31 - (64 << 20)


def model_bytes(model: Any) -> int:
    """The serialised size of the protobuf message ``model`` in bytes, or ``2**31`` when protobuf refuses to size
    it (above 2 GiB ``ByteSize`` raises ``EncodeError``)."""
    from google.protobuf.message import EncodeError

    try:
        return int(model.ByteSize())
    except EncodeError:
        return 2**31


def fits_protobuf(model: Any) -> bool:
    """Whether ``model`` can be serialised in one piece (its size is below ``PROTOBUF_LIMIT``)."""
    return model_bytes(model) < PROTOBUF_LIMIT
