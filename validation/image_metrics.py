"""Image-level metrics on N×C×H×W float images in [0, 1]: PSNR and SSIM (Wang et al. 2004)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB over the whole batch (one MSE over all pixels); inf for identical inputs."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def psnr_per_image(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """PSNR in dB of each image pair (N values); identical pairs give inf."""
    diff = (a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1)
    mse = np.mean(diff**2, axis=1)
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10 * np.log10(data_range**2 / np.maximum(mse, 1e-300)))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean SSIM over images and channels: Gaussian window sigma 1.5 (11 taps), K1 = 0.01, K2 = 0.03."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x = a.astype(np.float64).reshape(-1, *a.shape[-2:])
    y = b.astype(np.float64).reshape(-1, *b.shape[-2:])

    def blur(z: np.ndarray) -> np.ndarray:
        return gaussian_filter(z, sigma=(0, sigma, sigma), truncate=3.5, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N×D each), as FID computes it."""
    from scipy import linalg

    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1 = np.cov(f1, rowvar=False)
    s2 = np.cov(f2, rowvar=False)
    import warnings

    with warnings.catch_warnings():  # fewer samples than feature dimensions: singular, handled below
        warnings.simplefilter("ignore")
        covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
