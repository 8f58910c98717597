"""A Polygraphy runner over ``OpenVinoSession``, so ``Comparator.run`` can set OpenVINO beside ONNX Runtime."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from engines.openvino_session import OpenVinoSession


def openvino_runner(model: Path, cache_dir: Path | None = None, threads: int = 0, name: str = "quantized") -> Any:
    """A Polygraphy ``BaseRunner`` that runs ``model`` with OpenVINO (CPU, f32 precision hint, ``threads``)."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    class OpenVinoRunner(BaseRunner):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name=name, prefix="openvino-runner")
            self.session = OpenVinoSession(model, threads=threads, cache_dir=cache_dir)

        def activate_impl(self) -> None:
            self.session.activate()

        def get_input_metadata_impl(self) -> Any:
            meta = TensorMetadata()
            for port in self.session.compiled_model.inputs:
                shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
                meta.add(port.get_any_name(), dtype=DataType.from_dtype(np.dtype(port.get_element_type().to_dtype())),
                         shape=shape)
            return meta

        def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
            out = self.session.run(dict(feed_dict))
            self.inference_time = self.session.inference_time
            return OrderedDict(out)

        def deactivate_impl(self) -> None:
            self.session.deactivate()

    return OpenVinoRunner()
