"""How a loop feeds the UNet, written once for numpy arrays (``DenoiseRunner``) and torch tensors
(``TensorDenoiseRunner``): images in chunks of ``batch_size``, each chunk's model input twice over under
classifier-free guidance (the unconditional rows first, as ``Conditioning.unet_feeds`` stacks their conditioning),
the time step as one float32 per row, and the guided prediction put together per chunk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from common.lazy import lazy_import
from pipelines.conditioning import Conditioning

# feeds (numpy arrays or torch tensors) -> the UNet output "out", of the same kind
RunUnet = Callable[[dict[str, Any]], Any]
# (first image, images) -> the conditioning feeds of those images (``Conditioning.unet_feeds`` rows), same kind
CondFeeds = Callable[[int, int], dict[str, Any]]


def guided_rows(x: Any, guided: bool) -> Any:
    """``x`` (N×..., numpy or torch) as the UNet batch holds it: 2N rows (x, then x again) under guidance."""
    if not guided:
        return x
    if isinstance(x, np.ndarray):
        return np.concatenate([x, x])
    return lazy_import("torch").cat([x, x])


def unet_inputs(x: Any, t: Any, cond_feeds: dict[str, Any], guided: bool) -> dict[str, Any]:
    """The UNet feeds for model input ``x`` (N×C×H×W, numpy or torch) at time step ``t``: ``sample`` (2N rows under
    guidance, float32, contiguous), ``timestep`` (one float32 per row) and ``cond_feeds`` (already 2N rows)."""
    xb = guided_rows(x, guided)
    feeds = dict(cond_feeds)
    if isinstance(xb, np.ndarray):
        feeds["sample"] = np.ascontiguousarray(xb, dtype=np.float32)
        feeds["timestep"] = np.full((xb.shape[0],), float(t), dtype=np.float32)
    else:
        torch = lazy_import("torch")
        feeds["sample"] = xb.to(torch.float32).contiguous()
        feeds["timestep"] = torch.full((xb.shape[0],), float(t), dtype=torch.float32, device=xb.device)
    return feeds


def predict_in_chunks(x: Any, t: Any, cond: Conditioning | None, batch_size: int, run: RunUnet,
                      cond_feeds: CondFeeds | None = None) -> Any:
    """The (guided) UNet prediction for model input ``x`` (N×C×H×W, numpy or torch), ``batch_size`` images per
    UNet call; image ``i`` takes the conditioning rows ``cond_feeds(i, n)`` gives for it (default
    ``cond.unet_feeds``: numpy rows)."""
    guided = cond is not None and cond.guided
    outs = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        feeds: dict[str, Any] = {}
        if cond is not None:
            feeds = (cond_feeds or cond.unet_feeds)(i, xb.shape[0])
        eps = run(unet_inputs(xb, t, feeds, guided))
        outs.append(cond.guide(eps) if cond is not None else eps)
    if isinstance(x, np.ndarray):
        return np.concatenate(outs)
    return lazy_import("torch").cat(outs)
