"""A small digit classifier trained in this repository (no download): its penultimate features give the
Fréchet distance of the accuracy benchmark for the digits reference model.

Architecture: 1×32×32 -> conv 16 (3×3) -> ReLU -> maxpool 2 -> conv 32 -> ReLU -> maxpool 2 -> conv 32 -> ReLU
-> global average pool -> linear 32 (features, ReLU) -> linear 10. Trained on scikit-learn's digits, upsampled to
32×32 as the reference model's data, with small random shifts; 20% held out for the reported accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_dir
from common.errors import UserError
from common.lazy import lazy_import

FEATURE_DIM = 32


def _build() -> Any:
    torch = lazy_import("torch")
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, FEATURE_DIM), nn.ReLU(),
        nn.Linear(FEATURE_DIM, 10),
    )


def train_classifier(out: Path, seed: int = 0, epochs: int = 100) -> dict[str, Any]:
    """Train on 80% of the digits, report accuracy on the other 20%, save weights (safetensors) and a card."""
    torch = lazy_import("torch")
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    from common.digits_data import digits_dataset

    torch.manual_seed(seed)
    x = torch.from_numpy(digits_dataset(32))  # N×1×32×32 in [-1, 1]
    y = torch.from_numpy(load_digits().target.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(x))
    tr, te = perm[:split], perm[split:]
    model = _build()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = tr[torch.randperm(len(tr), generator=gen)]
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            xb = x[idx]
            shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(shift[0], shift[1]), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x[te]).argmax(1) == y[te]).float().mean())
    record = {"held_out_accuracy": round(acc, 4), "epochs": epochs, "seed": seed, "train_images": split,
              "test_images": len(te), "feature_dim": FEATURE_DIM}
    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        (tmp / "README.md").write_text(
            "# digit-classifier\n\nFeature extractor for the digits Fréchet distance (see validation/"
            f"digit_classifier.py). Trained by `python -m tools train-classifier {out}`: held-out accuracy "
            f"{acc:.4f} on {len(te)} images ({epochs} epochs, seed {seed}).\n")
    return record


class DigitFeatures:
    """Penultimate (32-d) features of the in-repo digit classifier for images in [0, 1], N×1×32×32."""

    def __init__(self, folder: Path) -> None:
        torch = lazy_import("torch")
        from safetensors.torch import load_file

        path = Path(folder) / "model.safetensors"
        if not path.is_file():
            raise UserError(f"digit classifier weights '{path}' missing: python -m tools train-classifier {folder}")
        self.model = _build()
        self.model.load_state_dict(load_file(str(path)))
        self.model.eval()
        self.torch = torch

    def features(self, images: np.ndarray) -> np.ndarray:
        """N×32 features of N×1×32×32 images in [0, 1]."""
        x = self.torch.from_numpy(np.ascontiguousarray(images * 2 - 1, dtype=np.float32))
        with self.torch.no_grad():
            return self.model[:-1](x).numpy().astype(np.float64)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted digit of each image."""
        x = self.torch.from_numpy(np.ascontiguousarray(images * 2 - 1, dtype=np.float32))
        with self.torch.no_grad():
            return self.model(x).argmax(1).numpy()
