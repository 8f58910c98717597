"""The min/opt/max ranges of an optimization profile, from export.json's ``profile`` and the batch flags: checked
once, and doubled at opt/max under classifier-free guidance (the unconditional and conditional rows of every image
share one batch; min stays, for unguided sampling). Used by the UNet build and the component builds."""

from __future__ import annotations

from typing import Any

from common.errors import UserError
from engines.tensorrt.plan import ShapeRange

# (min, opt, max) of one dynamic axis
Bounds = tuple[int, int, int]


def profile_ranges(info: dict[str, Any], min_batch: int | None = None, opt_batch: int | None = None,
                   max_batch: int | None = None) -> dict[str, Any]:
    """export.json's ``profile`` ranges (``min_<axis>``/``opt_<axis>``/``max_<axis>``), the batch flags overriding."""
    ranges = dict(info.get("profile") or {})
    for key, value in (("min_batch", min_batch), ("opt_batch", opt_batch), ("max_batch", max_batch)):
        if value is not None:
            ranges[key] = value
    return ranges


def axis_bounds(ranges: dict[str, Any], axis: str) -> Bounds:
    """(min, opt, max) of dynamic axis ``axis``; UserError naming the flags unless integers with 1 <= min <= opt <= max."""
    got = [ranges.get(f"{k}_{axis}") for k in ("min", "opt", "max")]
    if any(not isinstance(v, int) for v in got):
        raise UserError(f"export.json 'profile' has no integer min/opt/max for dynamic axis '{axis}' "
                        f"(got {got}); give --min-{axis}/--opt-{axis}/--max-{axis}")
    lo, opt, hi = (int(v) for v in got)  # type: ignore[arg-type]
    if not 1 <= lo <= opt <= hi:
        raise UserError(f"profile for '{axis}' must satisfy 1 <= min <= opt <= max, got "
                        f"min {lo}, opt {opt}, max {hi} (--min-{axis}/--opt-{axis}/--max-{axis})")
    return lo, opt, hi


def guided(bounds: Bounds, guidance: bool) -> Bounds:
    """Batch bounds counted in UNet rows: opt and max doubled under guidance (two rows per image)."""
    lo, opt, hi = bounds
    return (lo, 2 * opt, 2 * hi) if guidance else bounds


def shape_range(shape: list[int | str], bounds: dict[str, Bounds]) -> ShapeRange:
    """The ShapeRange of an input of ``shape`` (ints and axis names) with the named axes' ``bounds``."""
    def dims(which: int) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else bounds[d][which] for d in shape)

    return ShapeRange(dims(0), dims(1), dims(2))
