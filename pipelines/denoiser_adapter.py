"""A denoiser Session as the DenoiseRunner sees it, for the transformer families.

The runner feeds ``sample``, ``timestep`` and the conditioning rows (``Conditioning.unet_feeds``) and reads ``out``.
``AdaptedDenoiser`` adds what a family's graph takes beyond that and trims what it gives:
- ``fixed``: inputs that are the same every call (FLUX's ``txt_ids`` L×3 and ``img_ids`` N×3, no batch axis);
- feeds the graph does not take are dropped (DiT's placeholder text rows: its condition is ``class_labels``;
  FLUX-schnell's ``guidance``);
- ``keep_channels``: learned-sigma models (PixArt, DiT) output 2C channels; the first C are the prediction the
  scheduler steps with, as diffusers' pipelines take them (guidance is linear per channel, so trimming before or
  after guidance gives the same prediction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from engines.session import Session


@dataclass(frozen=True)
class DenoiserFeeds:
    """The family's additions to the runner's feeds (see the module docstring)."""

    fixed: Mapping[str, np.ndarray] = field(default_factory=dict)
    keep_channels: int | None = None


class AdaptedDenoiser:
    """``inner`` (a Session) with ``feeds`` applied on every call; a Session itself."""

    def __init__(self, inner: Session, feeds: DenoiserFeeds) -> None:
        self.inner = inner
        self.feeds = feeds

    @property
    def input_names(self) -> list[str]:
        return self.inner.input_names

    @property
    def output_names(self) -> list[str]:
        return self.inner.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = set(self.inner.input_names)
        call = {k: v for k, v in feeds.items() if k in names}
        call.update({k: v for k, v in self.feeds.fixed.items() if k in names})
        out = self.inner.run(call)
        if self.feeds.keep_channels is not None:
            out = {**out, "out": np.ascontiguousarray(out["out"][:, : self.feeds.keep_channels])}
        return out

    def __enter__(self) -> AdaptedDenoiser:
        self.inner.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.inner.__exit__(exc_type, exc, tb)
