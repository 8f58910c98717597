"""The Session protocol every backend implements: named numpy feeds in, named numpy outputs out."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Session(Protocol):
    """A loaded UNet ready to run. Use as a context manager: ``with OrtSession(path) as s: s.run(feeds)``."""

    @property
    def input_names(self) -> list[str]:
        """Names of the graph inputs, e.g. ``["sample", "timestep"]`` (+ ``"encoder_hidden_states"``)."""
        ...

    @property
    def output_names(self) -> list[str]:
        """Names of the graph outputs, e.g. ``["out"]``."""
        ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; ``feeds`` maps input names to host arrays; returns host arrays by output name."""
        ...

    def __enter__(self) -> Session: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class ManagedSession:
    """Base of the backends: ``with session:`` calls ``activate()`` / ``deactivate()`` (as Polygraphy's runners do).
    It declares the Session protocol's members, so every backend (and a router over backends) is a Session."""

    @property
    def input_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def output_names(self) -> list[str]:
        raise NotImplementedError

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def tensor_device(self) -> str | None:
        """The torch device whose tensors ``run_tensors`` takes and returns ("cuda:<n>"), for the device-resident
        loop (pipelines/tensor_runner.py); None when the session runs on host arrays only (the numpy loop)."""
        return None

    def activate(self) -> ManagedSession:
        raise NotImplementedError

    def deactivate(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ManagedSession:
        return self.activate()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()


def check_feeds(names: list[str], feeds: Mapping[str, object], what: str = "model") -> None:
    """ValueError naming the missing and unexpected feeds when ``feeds`` does not match ``names``."""
    missing = [n for n in names if n not in feeds]
    extra = [n for n in feeds if n not in names]
    if missing or extra:
        raise ValueError(f"feeds do not match the {what} inputs {names}: missing {missing}, unexpected {extra}")
