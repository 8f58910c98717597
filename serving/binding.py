"""What the server binds: a model binding describes the Triton model (inputs, outputs) and opens one infer
function per model instance. The unconditional binding is in ``unconditional.py``, the text-to-image one
(prompt -> image) in ``text2image.py``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

# PyTriton's infer function without @batch: one Triton batch = a list of requests (each a mapping input name ->
# array with a leading batch axis) -> one dict of outputs per request, in order.
InferFn = Callable[[list[Any]], list[dict[str, np.ndarray]]]


class ModelBinding(Protocol):
    """One Triton model over a work folder's pipeline."""

    @property
    def description(self) -> str:
        """One line: the model, backend and precision, for the server log."""
        ...

    def inputs(self) -> list[Any]:
        """PyTriton ``Tensor`` specs of the inputs (per row, without the batch axis)."""
        ...

    def outputs(self) -> list[Any]:
        """PyTriton ``Tensor`` specs of the outputs (per row)."""
        ...

    def open_instance(self) -> InferFn:
        """Open this instance's sessions (once, at bind time) and return its infer function."""
        ...

    def close(self) -> None:
        """Close every session the instances opened."""
        ...


def split_rows(outputs: np.ndarray, counts: list[int], name: str) -> list[dict[str, np.ndarray]]:
    """Per-request output dicts from one array of all rows, ``counts[i]`` rows for request i."""
    result, start = [], 0
    for n in counts:
        result.append({name: outputs[start : start + n]})
        start += n
    return result


def request_data(request: Any) -> Mapping[str, np.ndarray]:
    """The input arrays of a PyTriton request (``Request.data``) or of a plain mapping (tests)."""
    return getattr(request, "data", request)
