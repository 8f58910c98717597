"""SHA-256 of model files: the same digest as hashlib on the same bytes; external data and names count."""

from __future__ import annotations

import hashlib
from pathlib import Path

from common.hashing import onnx_model_sha256, sha256_files


def test_digest_covers_names_and_contents_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.data"
    a.write_bytes(b"graph")
    b.write_bytes(b"weights" * 1000)
    expected = hashlib.sha256(b"a.onnx\0graph" + b"b.data\0" + b"weights" * 1000).hexdigest()
    assert sha256_files([a, b], chunk=7) == expected  # streamed in chunks: the same digest
    assert sha256_files([b, a]) != expected


def test_onnx_digest_includes_the_external_data_file(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph")
    alone = onnx_model_sha256(model)
    assert alone == sha256_files([model])
    (tmp_path / "m.onnx.data").write_bytes(b"w1")
    with_data = onnx_model_sha256(model)
    (tmp_path / "m.onnx.data").write_bytes(b"w2")
    assert len({alone, with_data, onnx_model_sha256(model)}) == 3
