"""Request fields: every bad value is a RequestError whose message starts with the field name."""

from __future__ import annotations

import numpy as np
import pytest

from serving.fields import RequestError, float_rows, int_rows, rows_of, text_rows


def test_int_rows_default_range_and_count() -> None:
    req = {"seed": np.array([[1], [2]], dtype=np.int64)}
    assert rows_of(req, "seed") == 2
    assert int_rows(req, "seed", 2, None) == [1, 2]
    assert int_rows(req, "steps", 2, 50, 1, 100) == [50, 50]
    with pytest.raises(RequestError, match=r"^steps: 0 is out of range 1\.\.100"):
        int_rows({"steps": np.array([[0], [5]])}, "steps", 2, 50, 1, 100)
    with pytest.raises(RequestError, match="^steps: 1 values for 2 rows"):
        int_rows({"steps": np.array([[5]])}, "steps", 2, 50, 1, 100)
    with pytest.raises(RequestError, match="^seed: missing"):
        rows_of({}, "seed")


def test_float_rows_rejects_nan_and_range() -> None:
    assert float_rows({}, "guidance_scale", 2, 7.5, 0.0, 30.0) == [7.5, 7.5]
    with pytest.raises(RequestError, match="^guidance_scale: nan"):
        float_rows({"guidance_scale": np.array([[np.nan]])}, "guidance_scale", 1, 7.5, 0.0, 30.0)
    with pytest.raises(RequestError, match="^guidance_scale: 31.0 is out of range"):
        float_rows({"guidance_scale": np.array([[31.0]])}, "guidance_scale", 1, 7.5, 0.0, 30.0)


def test_text_rows_empty_prompt_and_optional_negative() -> None:
    req = {"prompt": np.array([[b"a digit"], [b"  "]], dtype=object)}
    with pytest.raises(RequestError, match="^prompt: empty"):
        text_rows(req, "prompt", 2, None)
    assert text_rows({"prompt": np.array([[b"seven"]], dtype=object)}, "prompt", 1, None) == ["seven"]
    assert text_rows({}, "negative_prompt", 2, "") == ["", ""]
    assert text_rows({"negative_prompt": np.array([[b""]], dtype=object)}, "negative_prompt", 1, "") == [""]
    with pytest.raises(RequestError, match="^prompt: not UTF-8"):
        text_rows({"prompt": np.array([[b"\xff"]], dtype=object)}, "prompt", 1, None)
    with pytest.raises(RequestError, match="^prompt: missing"):
        text_rows({}, "prompt", 1, None)
