"""A read-only index over an ONNX graph: producers, consumers, initializers and constant tensors by name."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import onnx
from onnx import numpy_helper

import numpy as np


@dataclass
class GraphIndex:
    """Name lookups for one ``onnx.GraphProto`` (built once; the graph is not modified)."""

    graph: onnx.GraphProto
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    constants: dict[str, onnx.TensorProto] = field(default_factory=dict)
    shapes: dict[str, tuple[int | str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, graph: onnx.GraphProto, value_info: list[onnx.ValueInfoProto] | None = None) -> GraphIndex:
        """Index ``graph``; ``value_info`` (e.g. from shape inference) adds tensor shapes (dim_param as str)."""
        idx = cls(graph)
        for vi in list(graph.input) + list(graph.output) + list(value_info or graph.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                dims = vi.type.tensor_type.shape.dim
                idx.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)
        for init in graph.initializer:
            idx.initializers[init.name] = init
        for node in graph.node:
            for out in node.output:
                idx.producer[out] = node
            for inp in node.input:
                if inp:
                    idx.consumers[inp].append(node)
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        idx.constants[node.output[0]] = attr.t
        return idx

    def is_constant(self, name: str) -> bool:
        """True for initializers and Constant-node outputs."""
        return name in self.initializers or name in self.constants

    def is_activation(self, name: str) -> bool:
        """True for tensors computed at run time (graph inputs or node outputs that are not constants)."""
        return bool(name) and not self.is_constant(name)

    def array(self, name: str) -> np.ndarray:
        """The value of a constant tensor."""
        proto = self.initializers.get(name) or self.constants[name]
        return numpy_helper.to_array(proto)

    def shape(self, name: str) -> tuple[int | str, ...] | None:
        """Inferred shape of ``name`` (initializers: their dims), or None when unknown."""
        if name in self.initializers:
            return tuple(self.initializers[name].dims)
        return self.shapes.get(name)

    def producer_op(self, name: str) -> str | None:
        node = self.producer.get(name)
        return node.op_type if node is not None else None


def int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    """Integer attribute ``name`` of ``node``, or ``default`` when absent."""
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def ints_attr(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    """Integer-list attribute ``name`` of ``node``, or ``default`` when absent."""
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return default
