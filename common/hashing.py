"""SHA-256 of model files, streamed so multi-GB weights never sit in memory twice."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def sha256_files(paths: Iterable[Path], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 over the contents of ``paths`` in the given order (each prefixed by its file name)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


def onnx_model_sha256(onnx_path: Path) -> str:
    """SHA-256 of an ONNX model: the ``.onnx`` file plus its external-data file ``<name>.data`` when present."""
    onnx_path = Path(onnx_path)
    files = [onnx_path]
    data = onnx_path.with_name(onnx_path.name + ".data")
    if data.exists():
        files.append(data)
    return sha256_files(files)
