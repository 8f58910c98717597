"""A graph form for CPUs without VNNI: INT8 weights re-rounded to 7 bits, so u8×s8 pair sums cannot saturate int16.

AVX2's ``vpmaddubsw`` (used by ONNX Runtime's U8S8 kernels and by oneDNN, hence OpenVINO, on CPUs without VNNI)
multiplies u8 by s8 and adds neighbouring pairs into a saturating int16: with weights in ±127 and activations up to 255
the sum exceeds 32767. With weights in [-64, 63] it cannot (255·64·2 = 32640). VNNI/AMX add into int32 and need none of
this. Measured in docs/cpu-backends.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def seven_bit_weights(model: Path, out: Path) -> Path:
    """``model`` with every INT8 weight initializer that feeds a DequantizeLinear re-rounded to [-64, 63] and its
    scale doubled (the same float weights to within one 7-bit step): no u8×s8 pair sum can saturate int16."""
    m = onnx.load(str(model))
    inits = {i.name: i for i in m.graph.initializer}
    done: set[str] = set()
    for node in m.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[0] in done:
            continue
        q = numpy_helper.to_array(inits[node.input[0]])
        if q.dtype != np.int8 or q.ndim < 2:  # weights only (activations are not initializers; biases are INT32)
            continue
        zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else None
        if zp is not None and np.any(zp != 0):
            continue
        scale = inits[node.input[1]]
        s = numpy_helper.to_array(scale)
        inits[node.input[0]].CopyFrom(numpy_helper.from_array(
            np.clip(np.round(q.astype(np.float32) / 2), -64, 63).astype(np.int8), node.input[0]))
        scale.CopyFrom(numpy_helper.from_array((s * 2).astype(s.dtype), node.input[1]))
        done.add(node.input[0])
    onnx.save(m, str(out))
    return out
