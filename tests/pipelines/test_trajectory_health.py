"""Trajectory health: which images' UNet inputs left the training range, and where first."""

from __future__ import annotations

import numpy as np

from pipelines.trajectory_health import ABS_LIMIT, TrajectoryHealth


def test_in_range_gaussian_inputs_are_not_flagged() -> None:
    """100 steps of unit-variance noise over 16 images of 4×64×64 (SD-latent sized): nothing beyond the limit."""
    rng = np.random.default_rng(0)
    h = TrajectoryHealth()
    for i in range(100):
        h.record(i, 990 - 10 * i, rng.standard_normal((16, 4, 64, 64)).astype(np.float32))
    assert h.off_images == [] and h.warning("hint") is None
    assert h.summary()["images_off_distribution"] == 0 and 3.0 < h.summary()["peak_abs"] < ABS_LIMIT  # type: ignore[operator]


def test_one_pixel_beyond_the_limit_flags_its_image_at_the_first_step() -> None:
    h = TrajectoryHealth()
    x = np.zeros((3, 1, 8, 8), np.float32)
    h.record(0, 980, x)
    y = x.copy()
    y[1, 0, 2, 2] = -(ABS_LIMIT + 1)
    h.record(1, 960, y)
    z = y.copy()
    z[1, 0, 2, 2] = -30.0
    z[2, 0, 0, 0] = 9.5
    h.record(2, 940, z)
    assert h.off_images == [1, 2]
    assert h.first_off == [None, (1, 960), (2, 940)]
    s = h.summary()
    assert s["images_off_distribution"] == 2 and s["peak_abs"] == 30.0 and s["first_off_step"] == {"step": 1, "t": 960}
    msg = h.warning("try X")
    assert msg is not None and "2/3 trajectories" in msg and "t=960" in msg and msg.endswith("; try X")


def test_a_new_batch_size_starts_over() -> None:
    h = TrajectoryHealth(limit=1.0)
    h.record(0, 10, np.full((2, 1, 2, 2), 5.0, np.float32))
    h.record(0, 10, np.zeros((4, 1, 2, 2), np.float32))
    assert h.off_images == [] and h.peak_abs.shape == (4,)
