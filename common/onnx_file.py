"""Reading an ONNX file the user named: what ``onnx.load`` raises for a bad file becomes one UserError naming it;
anything else (a bug) stays a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.errors import UserError, first_line
from common.lazy import lazy_import


def onnx_load_errors() -> tuple[type[BaseException], ...]:
    """What ``onnx.load`` raises for an unreadable file: a corrupt protobuf (``DecodeError``), a missing or
    unreadable file (``OSError``), external data that is missing or outside the model's folder (``ValidationError``)."""
    from google.protobuf.message import DecodeError

    checker = lazy_import("onnx.checker")
    return (DecodeError, OSError, checker.ValidationError)


def load_onnx(path: Path, external_data: bool = False) -> Any:
    """``onnx.load(path)`` (with its external data when ``external_data``); a bad file is a UserError naming it."""
    onnx = lazy_import("onnx")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except onnx_load_errors() as exc:
        raise UserError(f"cannot read ONNX model '{path}': {first_line(exc, 200)}") from exc
