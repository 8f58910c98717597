"""The unconditional binding without Triton: a batch of requests with mixed steps, grouped per value, gives every
request the images it gets alone; a bad value names the field and the request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.workdir import WorkDir
from serving.config import ServeConfig
from serving.fields import RequestError
from serving.unconditional import UnconditionalBinding


def _request(seeds: list[int], steps: int | None = None) -> dict[str, np.ndarray]:
    req = {"seed": np.array(seeds, dtype=np.int64).reshape(-1, 1)}
    if steps is not None:
        req["steps"] = np.full((len(seeds), 1), steps, dtype=np.int32)
    return req


def test_mixed_steps_in_one_batch_equal_each_request_alone(tiny_work: Path) -> None:
    binding = UnconditionalBinding(ServeConfig(work=tiny_work, steps=4, max_batch=4),
                                   WorkDir(tiny_work).load_export_info())
    infer = binding.open_instance()
    try:
        batch = [_request([1, 2], 3), _request([5]), _request([1], 4)]
        together = infer(batch)
        alone = [infer([r])[0]["image"] for r in batch]
    finally:
        binding.close()
    assert [o["image"].shape for o in together] == [(2, 16, 16, 1), (1, 16, 16, 1), (1, 16, 16, 1)]
    for got, want in zip(together, alone, strict=True):
        np.testing.assert_array_equal(got["image"], want)
    np.testing.assert_array_equal(together[2]["image"][0], infer_default(tiny_work, 1))  # default steps = 4
    assert not np.array_equal(together[0]["image"][0], together[2]["image"][0])  # same seed, 3 vs 4 steps


def infer_default(work: Path, seed: int) -> np.ndarray:
    binding = UnconditionalBinding(ServeConfig(work=work, steps=4), WorkDir(work).load_export_info())
    try:
        return binding.open_instance()([_request([seed])])[0]["image"][0]
    finally:
        binding.close()


def test_a_bad_value_names_the_field_and_the_request(tiny_work: Path) -> None:
    binding = UnconditionalBinding(ServeConfig(work=tiny_work, steps=3, max_steps=10), WorkDir(tiny_work).load_export_info())
    infer = binding.open_instance()
    try:
        with pytest.raises(RequestError, match=r"^steps: 11 is out of range 1\.\.10 \(request 2 of 2 in this batch\)"):
            infer([_request([1], 3), _request([2], 11)])
        with pytest.raises(RequestError, match=r"^seed: -3 is out of range"):
            infer([_request([-3])])
    finally:
        binding.close()
