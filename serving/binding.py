"""What the server binds: a model binding describes the Triton model (inputs, outputs) and opens one infer
function per model instance. The unconditional binding is in ``unconditional.py``, the text-to-image one
(prompt -> image) in ``text2image.py``."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol, TypeVar

import numpy as np

from serving.fields import RequestError

K = TypeVar("K", bound=Hashable)

# the input arrays of one request -> its rows per field (every list as long as the request has rows)
ReadRows = Callable[[Mapping[str, np.ndarray]], dict[str, list[Any]]]

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


def read_requests(requests: list[Any], read: ReadRows) -> tuple[dict[str, list[Any]], list[int]]:
    """The rows of every request of one Triton batch read by ``read``, joined per field in request order, and the
    number of rows of each request (for ``split_rows``). A RequestError of a batch of several requests says which."""
    fields: dict[str, list[Any]] = {}
    counts: list[int] = []
    for i, request in enumerate(requests):
        try:
            rows = read(request_data(request))
        except RequestError as exc:
            where = f" (request {i + 1} of {len(requests)} in this batch)" if len(requests) > 1 else ""
            raise RequestError(exc.field, f"{str(exc).split(': ', 1)[1]}{where}") from None
        for name, values in rows.items():
            fields.setdefault(name, []).extend(values)
        counts.append(len(next(iter(rows.values()))))
    return fields, counts


def rows_by_value(keys: list[K]) -> list[tuple[K, list[int]]]:
    """The row indices of each distinct value of ``keys``, values in sorted order: one lockstep loop each."""
    return [(value, [r for r, key in enumerate(keys) if key == value]) for value in sorted(set(keys))]  # type: ignore[type-var]
