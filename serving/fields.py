"""Reading request fields from a Triton batch: every bad value is a RequestError naming the field.

Triton itself rejects a wrong dtype or shape before the request reaches us (its message names the input); the
checks here are on values (ranges, empty text) and run in the model's infer function.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class RequestError(ValueError):
    """A request value is out of range or missing; the message starts with the field name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def rows_of(request: Mapping[str, np.ndarray], name: str) -> int:
    """The number of rows (images) of a request, from its required input ``name`` (shape B×1)."""
    if name not in request:
        raise RequestError(name, "missing")
    return int(np.asarray(request[name]).shape[0])


def int_rows(request: Mapping[str, np.ndarray], name: str, n: int, default: int | None,
             low: int | None = None, high: int | None = None) -> list[int]:
    """``n`` integers from input ``name`` (B×1); ``default`` when the optional input is absent; checked range."""
    if name not in request:
        if default is None:
            raise RequestError(name, "missing")
        return [default] * n
    values = np.asarray(request[name]).reshape(-1)
    if values.shape[0] != n:
        raise RequestError(name, f"{values.shape[0]} values for {n} rows")
    out = [int(v) for v in values]
    for v in out:
        if (low is not None and v < low) or (high is not None and v > high):
            raise RequestError(name, f"{v} is out of range {low}..{high}")
    return out


def float_rows(request: Mapping[str, np.ndarray], name: str, n: int, default: float,
               low: float, high: float) -> list[float]:
    """``n`` floats from the optional input ``name`` (B×1), finite and in ``low..high``."""
    if name not in request:
        return [default] * n
    values = np.asarray(request[name], dtype=np.float64).reshape(-1)
    if values.shape[0] != n:
        raise RequestError(name, f"{values.shape[0]} values for {n} rows")
    for v in values:
        if not np.isfinite(v) or not low <= v <= high:
            raise RequestError(name, f"{v} is out of range {low}..{high}")
    return [float(v) for v in values]


def text_rows(request: Mapping[str, np.ndarray], name: str, n: int, default: str | None) -> list[str]:
    """``n`` UTF-8 strings from a BYTES input ``name`` (B×1); a required one may not be empty."""
    if name not in request:
        if default is None:
            raise RequestError(name, "missing")
        return [default] * n
    values = np.asarray(request[name]).reshape(-1)
    if values.shape[0] != n:
        raise RequestError(name, f"{values.shape[0]} values for {n} rows")
    out = []
    for v in values:
        try:
            text = v.decode("utf-8") if isinstance(v, bytes | np.bytes_) else str(v)
        except UnicodeDecodeError as exc:
            raise RequestError(name, f"not UTF-8 ({exc})") from exc
        if default is None and not text.strip():
            raise RequestError(name, "empty")
        out.append(text)
    return out
