"""The Triton model of an unconditional UNet (``models/digits-ddpm``): ``seed`` (+ ``steps``) -> ``image``.

Inputs per row: ``seed`` INT64 [1], optional ``steps`` INT32 [1] (default ``ServeConfig.steps``, range
1..``max_steps``). Output per row: ``image`` UINT8 [H, W, C], the image ``python -m tools sample --seed <seed>
--num 1 --steps <steps>`` writes (same scheduler and flags as the server). One Triton batch may hold requests with
different ``steps``: they are grouped by value and each group is one lockstep loop over batched UNet calls.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.workdir import WorkDir
from engines.backends import open_session
from pipelines.lockstep import sample_lockstep, to_uint8_hwc
from pipelines.loop_setup import check_step_flags
from pipelines.runner import to_images
from pipelines.schedulers import make_scheduler
from serving.binding import InferFn, read_requests, rows_by_value, split_rows
from serving.config import ServeConfig
from serving.fields import int_rows, rows_of

SEED_RANGE = (0, 2**63 - 1)


class UnconditionalBinding:
    """``seed`` -> ``image`` over the work folder's UNet; one session per model instance."""

    def __init__(self, config: ServeConfig, info: dict[str, Any]) -> None:
        self.config = config
        self.image_shape: tuple[int, int, int] = tuple(info["inputs"]["sample"]["shape"][1:])  # type: ignore[assignment]
        self.scheduler_config = info["scheduler"]
        scheduler = make_scheduler(config.scheduler, self.scheduler_config)  # bad name: UserError now, not per request
        check_step_flags(scheduler, config.use_clipped_model_output)
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        self._described = ""

    @property
    def description(self) -> str:
        c, h, w = self.image_shape
        return f"unconditional {c}×{h}×{w}, {self.config.scheduler}, {self.config.precision} on {self._described}"

    def inputs(self) -> list[Any]:
        from pytriton.model_config import Tensor

        return [Tensor(name="seed", dtype=np.int64, shape=(1,)),
                Tensor(name="steps", dtype=np.int32, shape=(1,), optional=True)]

    def outputs(self) -> list[Any]:
        from pytriton.model_config import Tensor

        c, h, w = self.image_shape
        return [Tensor(name="image", dtype=np.uint8, shape=(h, w, c))]

    def open_instance(self) -> InferFn:
        session, described = open_session(WorkDir(self.config.work), self.config.precision, self.config.backend,
                                          self.config.threads)
        session.__enter__()
        with self._lock:
            self._sessions.append(session)
            self._described = described
        return lambda requests: self.infer(session, requests)

    def infer(self, session: Any, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """One Triton batch: check every request, group rows by ``steps``, denoise each group in lockstep."""
        rows, counts = read_requests(requests, self.read_rows)
        seeds, steps = rows["seed"], rows["steps"]
        images = np.empty((len(seeds), *self.output_hwc), dtype=np.uint8)
        for value, group in rows_by_value(steps):
            samples = sample_lockstep(
                session, lambda: make_scheduler(self.config.scheduler, self.scheduler_config), self.image_shape,
                [seeds[r] for r in group], value, batch_size=self.config.max_batch,
                use_clipped_model_output=self.config.use_clipped_model_output)
            images[group] = to_uint8_hwc(to_images(samples))
        return split_rows(images, counts, "image")

    def read_rows(self, data: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
        """The ``seed`` and ``steps`` rows of one request (RequestError naming a bad field)."""
        n = rows_of(data, "seed")
        return {"seed": int_rows(data, "seed", n, None, *SEED_RANGE),
                "steps": int_rows(data, "steps", n, self.config.steps, 1, self.config.max_steps)}

    @property
    def output_hwc(self) -> tuple[int, int, int]:
        c, h, w = self.image_shape
        return (h, w, c)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.__exit__(None, None, None)
