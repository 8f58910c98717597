"""Routing UNet calls by time step: the float model at high noise, the quantized one below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.ort_session import OrtSession
from pipelines.runner import DenoiseRunner, seeded_noise
from pipelines.schedulers import make_scheduler
from engines.timestep_routed import TimestepRoutedSession


class Recorder:
    """A stand-in Session that records the time steps it ran."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.seen: list[float] = []

    input_names = ["sample", "timestep"]
    output_names = ["out"]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(float(feeds["timestep"][0]))
        return {"out": np.full_like(feeds["sample"], self.value)}


def test_routes_by_time_step() -> None:
    high, low = Recorder(1.0), Recorder(2.0)
    with TimestepRoutedSession(high, low, threshold=900) as s:
        for t in (999.0, 900.0, 899.0, 10.0):
            s.run({"sample": np.zeros((2, 1, 4, 4), np.float32), "timestep": np.full(2, t, np.float32)})
        with pytest.raises(ValueError, match="mixes time steps"):
            s.run({"sample": np.zeros((2, 1, 4, 4), np.float32), "timestep": np.array([950, 10], np.float32)})
    assert high.seen == [999.0, 900.0] and low.seen == [899.0, 10.0]
    assert s.calls == {"high": 2, "low": 2}


def test_runner_with_routed_session_equals_its_parts(tiny_work: Path) -> None:
    """Threshold above every time step = the low model alone; at 0 = the high model alone."""
    info = __import__("json").loads((tiny_work / "export.json").read_text())
    noise = seeded_noise((1, 16, 16), range(2))

    def run(session: object) -> np.ndarray:
        with session:  # type: ignore[attr-defined]
            return DenoiseRunner(session, make_scheduler("ddim", info["scheduler"])).sample(noise, 5)  # type: ignore[arg-type]

    plain = run(OrtSession(tiny_work / "model.onnx"))
    routed = TimestepRoutedSession(Recorder(0.0), OrtSession(tiny_work / "model.onnx"), threshold=10_000)
    assert np.array_equal(run(routed), plain) and routed.calls == {"high": 0, "low": 5}


def test_grouped_session_routes_by_bounds() -> None:
    from engines.timestep_routed import TimestepGroupedSession, group_index

    bounds = [(0, 249), (250, 499), (500, 980)]
    recorders = [Recorder(float(g)) for g in range(3)]
    with TimestepGroupedSession(recorders, bounds) as s:
        for t, g in ((0, 0), (249, 0), (250, 1), (499, 1), (500, 2), (999, 2)):
            out = s.run({"sample": np.zeros((1, 1, 2, 2), np.float32), "timestep": np.array([t], np.float32)})
            assert float(out["out"].flat[0]) == g
    assert s.calls == [2, 2, 2]
    assert group_index(bounds, -5) == 0 and group_index(bounds, 2000) == 2
    with pytest.raises(ValueError, match="ascending and disjoint"):
        TimestepGroupedSession(recorders[:2], [(0, 10), (5, 20)])
    with pytest.raises(ValueError, match="sessions for"):
        TimestepGroupedSession(recorders, bounds[:2])


class TensorRecorder(Recorder):
    """A Recorder with the tensor protocol (torch tensors in and out)."""

    def run_tensors(self, feeds: dict[str, object]) -> dict[str, object]:
        import torch

        t = feeds["timestep"]
        assert isinstance(t, torch.Tensor)
        self.seen.append(float(t[0]))
        return {"out": torch.full_like(feeds["sample"], self.value)}  # type: ignore[arg-type]


def test_grouped_session_routes_device_tensors_too() -> None:
    import torch

    from pipelines.tensor_runner import device_of
    from engines.timestep_routed import TimestepGroupedSession
    from engines.tensorrt.session import TrtSession

    low, high = TensorRecorder(1.0), TensorRecorder(2.0)
    grouped = TimestepGroupedSession([low, high], [(0, 499), (500, 999)])
    out = grouped.run_tensors({"sample": torch.zeros(2, 1, 4, 4), "timestep": torch.full((2,), 700.0)})
    assert high.seen == [700.0] and not low.seen and float(out["out"].max()) == 2.0 and grouped.calls == [0, 1]
    with pytest.raises(ValueError, match="mixes time steps of groups 0 and 1"):
        grouped.run_tensors({"sample": torch.zeros(2, 1, 4, 4), "timestep": torch.tensor([10.0, 900.0])})
    no_tensors = TimestepGroupedSession([low, Recorder(3.0)], [(0, 499), (500, 999)])
    with pytest.raises(TypeError, match="group 1's Recorder has no run_tensors"):
        no_tensors.run_tensors({"sample": torch.zeros(1, 1, 4, 4), "timestep": torch.full((1,), 600.0)})
    # the device loop's device: the groups' common one (TensorRT engines on cuda:0), else the CPU loop
    engines = TimestepGroupedSession([TrtSession("a.plan"), TrtSession("b.plan")], [(0, 499), (500, 999)])
    assert device_of(engines) == "cuda:0"
    assert device_of(grouped) is None and device_of(TimestepGroupedSession([TrtSession("a.plan"), low],
                                                                           [(0, 499), (500, 999)])) is None
