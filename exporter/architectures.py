"""Known diffusers UNet architectures, built with random weights (``--arch``) or as the reference model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import UserError
from pipelines.families import ddpm

# google/ddpm-cifar10-32: UNet2DModel, 35.7 M parameters, 3x32x32.
DDPM_CIFAR10_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "block_out_channels": [128, 256, 256, 256],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "act_fn": "silu",
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "mid_block_scale_factor": 1,
}

# The DDPM-CIFAR10 structure scaled down for 1x32x32 digits: four resolutions, self-attention at 16x16,
# up blocks whose resnets take skip concatenations through a 1x1 conv_shortcut.
DIGITS_DDPM_UNET: dict[str, Any] = {
    **DDPM_CIFAR10_UNET,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": [32, 64, 64, 64],
    "norm_num_groups": 8,
}

# runwayml/stable-diffusion-v1-5 unet: UNet2DConditionModel, 860 M parameters, 4x64x64 latents, 77x768 text.
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "center_input_sample": False,
    "mid_block_scale_factor": 1,
}

# The schedulers these models were trained with: the bare-UNet family's defaults (pipelines/families/ddpm.py).
DDPM_SCHEDULER = ddpm.DDPM_SCHEDULER
SD15_SCHEDULER = ddpm.SD15_SCHEDULER


@dataclass(frozen=True)
class Architecture:
    """A named UNet: diffusers class name, its config, and the scheduler config it is sampled with."""

    name: str
    class_name: str  # "UNet2DModel" or "UNet2DConditionModel"
    unet_config: dict[str, Any]
    scheduler_config: dict[str, Any]


ARCHITECTURES: dict[str, Architecture] = {
    "ddpm-cifar10": Architecture("ddpm-cifar10", "UNet2DModel", DDPM_CIFAR10_UNET, DDPM_SCHEDULER),
    "digits-ddpm": Architecture("digits-ddpm", "UNet2DModel", DIGITS_DDPM_UNET, DDPM_SCHEDULER),
    "sd15-unet": Architecture("sd15-unet", "UNet2DConditionModel", SD15_UNET, SD15_SCHEDULER),
}


def get_architecture(name: str) -> Architecture:
    """Look up ``name`` or raise a UserError listing the known names."""
    if name not in ARCHITECTURES:
        raise UserError(f"unknown --arch '{name}'; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def build_random_unet(arch: Architecture, seed: int = 0) -> Any:
    """Instantiate ``arch`` with random weights (deterministic from ``seed``); returns a torch module in eval mode."""
    from common.lazy import lazy_import

    torch = lazy_import("torch")
    diffusers = lazy_import("diffusers")
    torch.manual_seed(seed)
    cls = getattr(diffusers, arch.class_name)
    return cls(**arch.unet_config).eval()
