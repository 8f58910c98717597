"""The denoising loop kept on one torch device: latents, UNet inputs and outputs, guidance and the scheduler step.

``DenoiseRunner`` (pipelines/runner.py) is the CPU loop: numpy in and out of the Session every step. On a GPU that
costs two host<->device copies and a synchronization per UNet call, and runs the scheduler on the CPU; for a small
UNet the per-step host overhead dominates (issue 15: the ddpm-cifar10 UNet at batch 8 on an H200, 22.6 ms eager vs
2.83 ms replayed as a CUDA graph). ``TensorDenoiseRunner`` is the same loop on torch tensors of one device:

* x_T is drawn as the CPU loop draws it (numpy, from the seed) and copied to the device once; the images come back
  once at the end. Nothing crosses to the host inside the loop, except the noise a stochastic scheduler draws
  (diffusers draws it from the CPU generator and moves it, which keeps the images equal to the CPU loop's);
* the UNet session runs through ``run_tensors`` (``TrtSession``: its bindings, CUDA-graph replay where the shapes
  are static; ``OrtSession``: IO binding, the CUDA provider on CUDA tensors);
* classifier-free guidance and ``scheduler.step`` run on the device (diffusers schedulers take CUDA tensors);
* trajectory health (the largest |x_t| per image and step) is reduced on the device and read once at the end.

On the CPU the same code runs with torch CPU tensors (the tests use it so, on ONNX Runtime's CPU provider).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from common.errors import UserError
from common.lazy import lazy_import
from pipelines.conditioning import Conditioning
from pipelines.loop_setup import start_loop
from pipelines.unet_batches import predict_in_chunks
from pipelines.trajectory_health import TrajectoryHealth

if TYPE_CHECKING:
    import torch


@runtime_checkable
class TensorSession(Protocol):
    """A Session that also runs on torch tensors where they lie (``OrtSession``, ``TrtSession``)."""

    @property
    def input_names(self) -> list[str]: ...

    def run_tensors(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run once; ``feeds`` and the returned outputs are torch tensors on the session's device."""
        ...


class TensorDenoiseRunner:
    """``DenoiseRunner.sample`` with every tensor on ``device`` (``"cuda"``, ``"cuda:1"``, or ``"cpu"``)."""

    def __init__(self, unet: Any, scheduler: Any, device: str = "cuda", batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not _runs_tensors(unet):
            raise UserError(f"{type(unet).__name__} cannot run on device tensors (no run_tensors); use the CPU loop")
        self.unet = unet
        self.scheduler = scheduler
        self.device = device
        self.batch_size = batch_size
        self.health = TrajectoryHealth()  # of the last ``sample`` call

    def predict_noise(self, x: torch.Tensor, t: Any, cond: Conditioning | None,
                      cond_feeds: dict[int, dict[str, torch.Tensor]]) -> torch.Tensor:
        """The UNet output for model input ``x`` (N×C×H×W on the device) at time step ``t``, with guidance.
        ``cond_feeds``: the conditioning inputs of each chunk (by first image), already on the device."""
        return predict_in_chunks(x, t, cond, self.batch_size, lambda feeds: self.unet.run_tensors(feeds)["out"],
                                 lambda i, n: cond_feeds.get(i, {}))

    def sample(
        self,
        noise: np.ndarray,
        num_steps: int,
        seed: int = 0,
        cond: Conditioning | None = None,
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Denoise ``noise`` (x_T, N×C×H×W float32) in ``num_steps`` steps on the device; the final sample as a host
        array, as ``DenoiseRunner.sample`` returns it (same seed handling, same scheduler arguments). ``progress``
        sees (step index, time step) before each step (no tensor: the model input stays on the device)."""
        torch = lazy_import("torch")
        device = torch.device(self.device)
        sched = self.scheduler
        start = start_loop(sched, noise, num_steps, seed, eta=eta, use_clipped_model_output=use_clipped_model_output,
                           device=device)
        x = start.x
        cond_feeds: dict[int, dict[str, Any]] = {}  # torch tensors, copied to the device once, before the loop
        if cond is not None:
            for i in range(0, noise.shape[0], self.batch_size):
                n = min(self.batch_size, noise.shape[0] - i)
                cond_feeds[i] = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device)
                                 for k, v in cond.unet_feeds(i, n).items()}
        timesteps = list(sched.timesteps)
        peaks = torch.zeros((len(timesteps), noise.shape[0]), dtype=torch.float32, device=device)
        for i, t in enumerate(timesteps):
            if progress is not None:
                progress(i, int(t))
            model_in = sched.scale_model_input(x, t)
            peaks[i] = model_in.detach().abs().reshape(model_in.shape[0], -1).amax(dim=1).float()
            eps = self.predict_noise(model_in, t, cond, cond_feeds)
            x = sched.step(eps, t, x, **start.step_kwargs).prev_sample
        self.health = TrajectoryHealth()
        for i, (t, peak) in enumerate(zip(timesteps, peaks.cpu().numpy(), strict=True)):
            self.health.record(i, int(t), peak[:, None])
        return x.float().cpu().numpy()


def device_of(session: Any) -> str | None:
    """The CUDA device a session runs on, for ``TensorDenoiseRunner`` ("cuda:<n>"), or None (use the CPU loop): what
    the session says (``ManagedSession.tensor_device``: a TensorRT engine's GPU, ONNX Runtime's CUDA provider, the
    common device of time-step groups); None for a session without ``run_tensors``."""
    return getattr(session, "tensor_device", None) if _runs_tensors(session) else None


def _runs_tensors(session: Any) -> bool:
    """Whether ``session`` has ``run_tensors`` (checked on its type: an inactive session's properties raise)."""
    return callable(getattr(type(session), "run_tensors", None))
