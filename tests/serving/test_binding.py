"""Reading a Triton batch once for every binding: rows per field in request order, errors naming the request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from serving.binding import read_requests, rows_by_value, split_rows
from serving.fields import RequestError, int_rows, rows_of


def _read(data: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    n = rows_of(data, "seed")
    return {"seed": int_rows(data, "seed", n, None, 0, 99), "steps": int_rows(data, "steps", n, 5, 1, 10)}


def test_rows_are_joined_in_request_order_and_split_back() -> None:
    requests = [{"seed": np.array([[1], [2]])}, {"seed": np.array([[3]]), "steps": np.array([[7]])}]
    rows, counts = read_requests(requests, _read)
    assert rows == {"seed": [1, 2, 3], "steps": [5, 5, 7]} and counts == [2, 1]
    out = split_rows(np.arange(3), counts, "image")
    assert [o["image"].tolist() for o in out] == [[0, 1], [2]]


def test_a_bad_value_names_the_request_of_a_batch() -> None:
    with pytest.raises(RequestError, match=r"^steps: 11 is out of range 1\.\.10 \(request 2 of 2 in this batch\)$"):
        read_requests([{"seed": np.array([[1]])}, {"seed": np.array([[2]]), "steps": np.array([[11]])}], _read)
    with pytest.raises(RequestError, match=r"^seed: missing$"):
        read_requests([{}], _read)


def test_rows_are_grouped_by_value_in_sorted_order() -> None:
    assert rows_by_value([5, 3, 5, 3, 9]) == [(3, [1, 3]), (5, [0, 2]), (9, [4])]
    assert rows_by_value([(5, 1.0), (5, 2.0), (5, 1.0)]) == [((5, 1.0), [0, 2]), ((5, 2.0), [1])]
