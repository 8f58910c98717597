"""Lazy imports of heavy optional modules with an install hint (torch, tensorrt, cuda, pytriton, openvino)."""

from __future__ import annotations

import importlib
from types import ModuleType

from common.errors import UserError

_HINTS = {
    "torch": "pip install torch==2.13.0  (the CPU build; see requirements.txt)",
    "diffusers": "pip install -r requirements.txt",
    "transformers": "pip install -r requirements.txt  (text encoders and tokenizers of text-to-image pipelines)",
    "tensorrt": "pip install -r requirements-gpu.txt  (needs an NVIDIA GPU; or use the Docker image)",
    "polygraphy": "pip install -r requirements.txt",
    "pytriton": "pip install --no-deps -r requirements-serve.txt  (see docs/serving.md)",
    "tritonclient": "pip install --no-deps -r requirements-serve.txt  (see docs/serving.md)",
    "openvino": "pip install openvino==2026.4.1  (see requirements.txt)",
}


def lazy_import(name: str) -> ModuleType:
    """Import ``name`` or raise a UserError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        root = name.split(".")[0]
        hint = _HINTS.get(root, f"pip install {root}")
        raise UserError(f"module '{name}' is not installed ({exc}); install it with: {hint}") from exc
