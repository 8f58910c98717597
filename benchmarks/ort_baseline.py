"""ONNX Runtime's own ``quantize_static`` as a baseline, fed with our calibration samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibrators.graph_taps import sample_feeds
from calibrators.sample import CalibSample


class _Reader:
    """CalibrationDataReader over CalibSamples (one feed per sample)."""

    def __init__(self, samples: list[CalibSample]) -> None:
        self.feeds = [sample_feeds(s) for s in samples]
        self.i = 0

    def get_next(self) -> dict[str, Any] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def ort_quantize_static(model: Path, out: Path, samples: list[CalibSample], *, op_types: list[str] | None = None,
                        symmetric_activations: bool = False, weight_bits: int = 8) -> None:
    """quantize_static in QDQ format, per-channel weights, MinMax calibration; all ops unless ``op_types``;
    INT4 weights (``QuantType.QInt4``) when ``weight_bits`` is 4."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(model), str(out), _Reader(samples),  # type: ignore[arg-type]
        quant_format=QuantFormat.QDQ, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt4 if weight_bits == 4 else QuantType.QInt8,
        op_types_to_quantize=op_types,
        extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
    )
