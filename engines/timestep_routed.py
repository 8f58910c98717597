"""Sessions that route each UNet call by its diffusion time step (0 = clean, T = noise).

``TimestepGroupedSession``: K sessions, one per group of time steps (inclusive bounds) — the runner of
``quantize --timestep-groups K``'s graphs, which differ only in their activation scales.
``TimestepRoutedSession``: two sessions split at a threshold, the float model at high noise and the quantized one
below. At the first (high-noise) steps a sampler that predicts x0 divides the UNet's error by sqrt(alpha_bar) (about
0.006 at t = 990 for the DDPM schedule). How much routing those steps to FP32 buys is measured by
``benchmarks.float_steps`` (on the reference model: 32.1 -> 33.8 dB at DDIM 50 with 10 FP32 steps; nothing at DDIM 100
with clip_sample, where the loss comes from trajectories leaving the training range: pipelines/trajectory_health.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.group_manifest import grouped_manifest_for
from engines.session import ManagedSession, Session


def group_index(bounds: Sequence[tuple[int, int]], t: float) -> int:
    """Index of the group whose inclusive bounds hold ``t``; between two groups the lower one (a group's range
    extends up to the next group's first step); outside every group the nearest end group."""
    if not bounds:
        raise ValueError("no groups")
    for index in range(len(bounds) - 1, -1, -1):
        if t >= bounds[index][0]:
            return index
    return 0


class TimestepGroupedSession(ManagedSession):
    """``sessions[g]`` runs every call whose time step lies in ``bounds[g]`` (inclusive, ascending); all must share
    inputs and outputs. ``calls[g]`` counts the calls group ``g`` ran."""

    def __init__(self, sessions: Sequence[Session], bounds: Sequence[tuple[int, int]]) -> None:
        if not sessions or len(sessions) != len(bounds):
            raise ValueError(f"{len(sessions)} sessions for {len(bounds)} groups")
        if any(b[1] < b[0] for b in bounds) or any(b[0] <= a[1] for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"group bounds {list(bounds)} must be non-empty, ascending and disjoint")
        self.sessions = list(sessions)
        self.bounds = [(int(a), int(b)) for a, b in bounds]
        self.calls = [0] * len(self.sessions)

    @property
    def input_names(self) -> list[str]:
        return self.sessions[0].input_names

    @property
    def output_names(self) -> list[str]:
        return self.sessions[0].output_names

    def activate(self) -> TimestepGroupedSession:
        for s in self.sessions:
            s.__enter__()
        first = self.sessions[0]
        for g, s in enumerate(self.sessions[1:], 1):
            if s.input_names != first.input_names or s.output_names != first.output_names:
                raise ValueError(f"group {g}'s session differs from group 0's: inputs {s.input_names} vs "
                                 f"{first.input_names}, outputs {s.output_names} vs {first.output_names}")
        return self

    def deactivate(self) -> None:
        for s in self.sessions:
            s.__exit__(None, None, None)

    def group_for(self, feeds: dict[str, np.ndarray]) -> int:
        """The group of the feed's time step (the runner feeds one time step per call, broadcast over the batch)."""
        t = np.asarray(feeds["timestep"], dtype=np.float64).reshape(-1)
        if not t.size:
            raise ValueError("empty timestep feed")
        return self._group_of(float(t.min()), float(t.max()))

    def _group_of(self, t_min: float, t_max: float) -> int:
        lo, hi = group_index(self.bounds, t_min), group_index(self.bounds, t_max)
        if lo != hi:
            raise ValueError(f"one call mixes time steps of groups {lo} and {hi}: t {t_min}..{t_max}")
        return lo

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        g = self.group_for(feeds)
        self.calls[g] += 1
        return self.sessions[g].run(feeds)

    @property
    def tensor_device(self) -> str | None:
        """The groups' common tensor device, or None when they run on host arrays or on different devices."""
        devices = {getattr(s, "tensor_device", None) for s in self.sessions}
        return devices.pop() if len(devices) == 1 else None

    def run_tensors(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """The tensor protocol (pipelines/tensor_runner.py) routed the same way, for groups whose sessions have it
        (TensorRT, ONNX Runtime). The time step is read on the host: one device synchronization per call."""
        t = feeds["timestep"]
        if not t.numel():
            raise ValueError("empty timestep feed")
        g = self._group_of(float(t.min()), float(t.max()))
        session = self.sessions[g]
        if not callable(getattr(session, "run_tensors", None)):
            raise TypeError(f"group {g}'s {type(session).__name__} has no run_tensors")
        self.calls[g] += 1
        return session.run_tensors(feeds)  # type: ignore[attr-defined, no-any-return]


def grouped_session(path: Path, open_one: Callable[[Path], ManagedSession]) -> ManagedSession:
    """An inactive session on the ONNX model ``path`` for any backend: ``open_one(path)`` alone, or, when
    ``quantize --timestep-groups K`` wrote group graphs beside it (``<model>.groups.json``), a
    TimestepGroupedSession of ``open_one(group graph)`` for each group, which runs every step on its group's graph."""
    manifest = grouped_manifest_for(Path(path))
    if manifest is None:
        return open_one(Path(path))
    return TimestepGroupedSession([open_one(p) for p in manifest.model_paths(Path(path).parent)], manifest.bounds)


class TimestepRoutedSession(ManagedSession):
    """``high`` runs every call whose time step is >= ``threshold`` (diffusion time steps, 0 = clean), ``low`` the
    rest; both must share inputs and outputs. ``calls`` counts the calls each one ran ({"high": n, "low": m})."""

    def __init__(self, high: Session, low: Session, threshold: float) -> None:
        self.high = high
        self.low = low
        self.threshold = float(threshold)
        self.calls = {"high": 0, "low": 0}

    @property
    def input_names(self) -> list[str]:
        return self.low.input_names

    @property
    def output_names(self) -> list[str]:
        return self.low.output_names

    def activate(self) -> TimestepRoutedSession:
        self.high.__enter__()
        self.low.__enter__()
        if self.high.input_names != self.low.input_names or self.high.output_names != self.low.output_names:
            raise ValueError(f"routed sessions differ: inputs {self.high.input_names} vs {self.low.input_names}, "
                             f"outputs {self.high.output_names} vs {self.low.output_names}")
        return self

    def deactivate(self) -> None:
        self.high.__exit__(None, None, None)
        self.low.__exit__(None, None, None)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Route on the feed's time step (the runner feeds one time step per call, broadcast over the batch)."""
        t = np.asarray(feeds["timestep"], dtype=np.float64)
        if t.size and float(t.min()) != float(t.max()) and (t.min() < self.threshold <= t.max()):
            raise ValueError(f"one call mixes time steps on both sides of {self.threshold}: {np.unique(t)}")
        side = "high" if t.size and float(t.max()) >= self.threshold else "low"
        self.calls[side] += 1
        return (self.high if side == "high" else self.low).run(feeds)
