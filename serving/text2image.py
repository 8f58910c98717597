"""The Triton model of a text-to-image pipeline (text encoder(s), UNet, VAE decoder): ``prompt`` -> ``image``.

Inputs per row: ``prompt`` BYTES [1] (UTF-8, not empty); optional ``negative_prompt`` BYTES [1] (absent: the
pipeline's default unconditional row, as ``sample`` without ``--negative-prompt``), ``seed`` INT64 [1] (default 0),
``steps`` INT32 [1] (default ``ServeConfig.steps``, range 1..``max_steps``), ``guidance_scale`` FP32 [1] (default
``ServeConfig.guidance_scale``, range 0..``MAX_GUIDANCE``; <= 1: no guidance). Output per row: ``image`` UINT8
[H, W, 3], the image ``python -m tools sample WORK --prompt P --seed S --num 1 --steps N --guidance-scale G`` writes
(same scheduler and precision as the server).

One Triton batch may hold requests with different ``steps`` or ``guidance_scale``: rows are grouped per
(steps, guidance_scale) value and each group is one lockstep loop over batched UNet calls (``pipelines/lockstep.py``);
different prompts and negative prompts share a group (their embeddings are rows of one conditioning).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.errors import UserError
from common.workdir import WorkDir
from engines.backends import open_session, resolve_backend
from pipelines.conditioning import Conditioning
from pipelines.lockstep import sample_lockstep, to_uint8_hwc
from pipelines.loop_setup import check_step_flags
from pipelines.schedulers import make_scheduler
from pipelines.text2image import TextToImage, TextToImageSpec, open_text_to_image
from serving.binding import InferFn, read_requests, rows_by_value, split_rows
from serving.config import ServeConfig
from serving.fields import float_rows, int_rows, rows_of, text_rows

SEED_RANGE = (0, 2**63 - 1)
MAX_GUIDANCE = 100.0


class TextToImageBinding:
    """``prompt`` (+ ``negative_prompt``, ``seed``, ``steps``, ``guidance_scale``) -> ``image``; every model
    instance opens its own text encoder(s), UNet and VAE decoder sessions once."""

    def __init__(self, config: ServeConfig, info: dict[str, Any]) -> None:
        self.config = config
        self.info = info
        self.spec = TextToImageSpec.from_export_info(info, WorkDir(config.work).root)
        self.latent_shape: tuple[int, int, int] = tuple(info["inputs"]["sample"]["shape"][1:])  # type: ignore[assignment]
        self.scheduler_config = info["scheduler"]
        scheduler = make_scheduler(config.scheduler, self.scheduler_config)  # bad name: UserError now, not per request
        check_step_flags(scheduler, config.use_clipped_model_output)
        if not 0.0 <= config.guidance_scale <= MAX_GUIDANCE:
            raise UserError(f"--guidance-scale must be in 0..{MAX_GUIDANCE:g}, got {config.guidance_scale}")
        self._stacks: list[contextlib.ExitStack] = []
        self._lock = threading.Lock()
        self._described = ""

    @property
    def description(self) -> str:
        h, w = self.spec.image_size
        encoders = "+".join(e.name for e in self.spec.text_encoders)
        return (f"text-to-image 3×{h}×{w} ({encoders}, UNet, VAE decoder), {self.config.scheduler}, guidance "
                f"{self.config.guidance_scale:g}, {self.config.precision} UNet on {self._described}")

    def inputs(self) -> list[Any]:
        from pytriton.model_config import Tensor

        return [Tensor(name="prompt", dtype=np.bytes_, shape=(1,)),
                Tensor(name="negative_prompt", dtype=np.bytes_, shape=(1,), optional=True),
                Tensor(name="seed", dtype=np.int64, shape=(1,), optional=True),
                Tensor(name="steps", dtype=np.int32, shape=(1,), optional=True),
                Tensor(name="guidance_scale", dtype=np.float32, shape=(1,), optional=True)]

    def outputs(self) -> list[Any]:
        from pytriton.model_config import Tensor

        h, w = self.spec.image_size
        return [Tensor(name="image", dtype=np.uint8, shape=(h, w, 3))]

    def open_instance(self) -> InferFn:
        work = WorkDir(self.config.work)
        unet, described = open_session(work, self.config.precision, self.config.backend, self.config.threads)
        stack = contextlib.ExitStack()
        t2i = stack.enter_context(open_text_to_image(
            work.root, self.info, unet, make_scheduler(self.config.scheduler, self.scheduler_config),
            self.config.max_batch, self.config.threads, resolve_backend(self.config.backend)))
        with self._lock:
            self._stacks.append(stack)
            self._described = described
        return lambda requests: self.infer(t2i, requests)

    def infer(self, t2i: TextToImage, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """One Triton batch: check every request, group rows by (steps, guidance_scale), denoise each group in
        lockstep, decode through the VAE."""
        rows, counts = read_requests(requests, self.read_rows)
        prompts, negatives, seeds = rows["prompt"], rows["negative_prompt"], rows["seed"]
        h, w = self.spec.image_size
        images = np.empty((len(prompts), h, w, 3), dtype=np.uint8)
        for (steps, scale), group in rows_by_value(list(zip(rows["steps"], rows["guidance_scale"], strict=True))):
            cond = group_conditioning(t2i, [prompts[r] for r in group], [negatives[r] for r in group], scale)
            latents = sample_lockstep(
                t2i.runner.unet, lambda: make_scheduler(self.config.scheduler, self.scheduler_config),
                self.latent_shape, [seeds[r] for r in group], steps, cond=cond, batch_size=self.config.max_batch,
                use_clipped_model_output=self.config.use_clipped_model_output)
            images[group] = to_uint8_hwc(t2i.decode(latents))
        return split_rows(images, counts, "image")

    def read_rows(self, data: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
        """The rows of one request, every field filled in (RequestError naming a bad field)."""
        n = rows_of(data, "prompt")
        return {"prompt": text_rows(data, "prompt", n, None),
                "negative_prompt": (text_rows(data, "negative_prompt", n, "") if "negative_prompt" in data
                                    else [None] * n),
                "seed": int_rows(data, "seed", n, 0, *SEED_RANGE),
                "steps": int_rows(data, "steps", n, self.config.steps, 1, self.config.max_steps),
                "guidance_scale": float_rows(data, "guidance_scale", n, self.config.guidance_scale, 0.0,
                                             MAX_GUIDANCE)}

    def close(self) -> None:
        with self._lock:
            stacks, self._stacks = self._stacks, []
        for stack in stacks:
            stack.close()


def group_conditioning(t2i: TextToImage, prompts: list[str], negatives: list[str | None],
                       guidance_scale: float) -> Conditioning:
    """One conditioning row per image: image i conditioned on ``prompts[i]``, guided against ``negatives[i]``
    (None: the pipeline's default unconditional row). Prompts sharing a negative prompt are encoded together, as
    ``sample --prompts`` encodes them (``TextToImage.conditioning``)."""
    n = len(prompts)
    parts: dict[str | None, tuple[list[int], Conditioning]] = {}
    for negative in dict.fromkeys(negatives):
        idx = [i for i in range(n) if negatives[i] == negative]
        parts[negative] = (idx, t2i.conditioning([prompts[i] for i in idx], negative, guidance_scale))
    first = next(iter(parts.values()))[1]

    def gather(pick: Any) -> np.ndarray | None:
        """Rows of every part's array ``pick(c)`` (R or 1 rows) placed at its images' indices."""
        if pick(first) is None:
            return None
        sample = pick(first)
        out = np.empty((n, *sample.shape[1:]), dtype=np.float32)
        for idx, c in parts.values():
            arr = pick(c)
            out[idx] = arr[np.arange(len(idx)) % arr.shape[0]]
        return out

    cond = gather(lambda c: c.cond)
    assert cond is not None
    uncond = gather(lambda c: c.uncond)
    added = {k: gather(lambda c, k=k: c.added[k]) for k in first.added}
    added_uncond = {k: gather(lambda c, k=k: c.added_uncond[k]) for k in first.added_uncond}
    return Conditioning(cond, uncond, guidance_scale, added, added_uncond)  # type: ignore[arg-type]
