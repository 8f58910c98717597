"""TensorRT backend: ``TrtSession`` runs a built engine behind the Session protocol (numpy in, numpy out) and the
tensor protocol (``run_tensors``: torch CUDA tensors in and out, no host copy).

Device buffers are torch CUDA tensors; a run sets the input shapes (``set_input_shape``), binds every I/O tensor
(``set_tensor_address``) and enqueues ``execute_async_v3`` on a torch CUDA stream, as TensorRT's demo/Diffusion
Engine class does. Output buffers are sized from ``context.get_tensor_shape`` once the input shapes are set.

With ``cuda_graph=True`` each distinct set of input shapes gets its own execution context, static buffers and a
CUDA graph captured after one warm-up run (TensorRT needs an enqueue before capture); later runs of that shape
copy the inputs in and replay the graph. Those contexts share one activation buffer (``USER_MANAGED`` allocation,
sized ``device_memory_size_v2``; demo/Diffusion shares one buffer across engines the same way): they run one
after another on one stream, so one buffer serves all. A capture whose enqueue fails leaves no graph behind and
raises. Without CUDA graphs, one context serves every shape. The Runtime takes the process-wide logger
(``engines.tensorrt.plan.trt_logger``).

tensorrt and torch are imported on ``activate``; ``.plan.json`` is checked first (TensorRT version, GPU, source
ONNX), so an engine from another TensorRT or GPU is a UserError naming the file, not a crash in deserialization.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.errors import UserError
from engines.session import ManagedSession, check_feeds
from common.lazy import lazy_import
from engines.tensorrt.plan import GpuInfo, PlanInfo, current_gpu, load_checked, require_tensorrt, trt_logger

if TYPE_CHECKING:  # typed against tensorrt-stubs and torch by `make typecheck`; imported lazily at run time
    import tensorrt as trt
    import torch

ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]
# (TensorRT version, GPU) -> the checked metadata of the engine, or a UserError naming what does not fit
PlanChecker = Callable[[str, GpuInfo], PlanInfo]


@dataclass
class _Binding:
    """Buffers (and, with CUDA graphs, a context and its graph) for one set of input shapes."""

    context: trt.IExecutionContext
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    graph: torch.cuda.CUDAGraph | None = None


class TrtSession(ManagedSession):
    """A TensorRT engine file as a Session. ``with TrtSession(plan) as s: out = s.run({"sample": x, ...})["out"]``.

    ``inference_time`` holds the wall time in seconds of the last ``run`` (host->device copies, execution,
    device->host copies), as Polygraphy's TrtRunner records it.

    ``checker``: how ``activate`` checks the engine before deserializing it (default: its own ``.plan.json``,
    ``load_checked``); a time-step group engine is checked against the global engine's ``.plan.json``
    (``functools.partial(engines.tensorrt.plan.load_checked_group, global_plan, index)``).
    """

    def __init__(self, plan: Path | str, cuda_graph: bool = False, device: int = 0, check: bool = True,
                 checker: PlanChecker | None = None) -> None:
        self.plan = Path(plan)
        self.cuda_graph = cuda_graph
        self.device = device
        self.check = check
        self.checker = checker
        self.inference_time = 0.0
        self.info: PlanInfo | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._stream: torch.cuda.Stream | None = None
        self._bindings: dict[ShapeKey, _Binding] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._activation_memory: torch.Tensor | None = None  # shared by the CUDA-graph contexts

    # --- lifecycle -------------------------------------------------------------------------------------------
    def activate(self) -> TrtSession:
        """Check ``.plan.json`` against this machine, deserialize the engine, create a context and a stream."""
        if self._engine is not None:
            return self
        require_tensorrt()
        import tensorrt as trt

        lazy_import("torch")
        import torch

        gpu = current_gpu(self.device)
        if self.check:
            self.info = (self.checker(trt.__version__, gpu) if self.checker is not None
                         else load_checked(self.plan, trt.__version__, gpu))
        elif not self.plan.is_file():
            raise UserError(f"TensorRT engine '{self.plan}' does not exist")
        torch.cuda.set_device(self.device)
        runtime = trt.Runtime(trt_logger())
        engine = runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if engine is None:
            raise UserError(f"TensorRT {trt.__version__} cannot deserialize engine '{self.plan}' (corrupt, or built "
                            f"by another TensorRT version or for another GPU); rebuild it with python -m tools build")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._engine = engine
        self._stream = torch.cuda.Stream(device=self.device)
        if not self.cuda_graph:
            self._context = engine.create_execution_context()
        return self

    def deactivate(self) -> None:
        """Release graphs, buffers, contexts and the engine (in that order)."""
        for binding in self._bindings.values():
            binding.graph = None
        self._bindings.clear()
        self._activation_memory = None
        self._context = None
        self._engine = None
        self._stream = None

    def __enter__(self) -> TrtSession:
        self.activate()
        return self

    # --- metadata --------------------------------------------------------------------------------------------
    @property
    def engine(self) -> trt.ICudaEngine:
        """The deserialized engine (e.g. for ``create_engine_inspector``)."""
        if self._engine is None:
            raise RuntimeError("TrtSession used before activate()")
        return self._engine

    @property
    def stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            raise RuntimeError("TrtSession used before activate()")
        return self._stream

    @property
    def input_names(self) -> list[str]:
        self._require_active()
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        self._require_active()
        return list(self._outputs)

    def _require_active(self) -> None:
        if self._engine is None:
            raise RuntimeError("TrtSession used before activate()")

    # --- inference -------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays; unknown/missing names or a shape outside the engine's profile: ValueError."""
        import torch

        names = self.input_names
        check_feeds(names, feeds, "engine")
        start = time.perf_counter()
        with torch.cuda.stream(self.stream):
            tensors = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names}
            binding = self._execute(tensors)
            outs = {n: t.cpu().numpy() for n, t in binding.outputs.items()}
        self.stream.synchronize()
        self.inference_time = time.perf_counter() - start
        return outs

    @property
    def tensor_device(self) -> str | None:
        """The engine's GPU, "cuda:<device>" (known before activation)."""
        return f"cuda:{self.device}"

    def run_tensors(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run once on torch tensors (CUDA: no host copy); returns new CUDA tensors (copies of the engine's output
        buffers, which the next run overwrites). Ordered on the current torch stream: this call waits for the work
        that produced ``feeds`` and the current stream waits for the outputs, with no host synchronization."""
        import torch

        names = self.input_names
        check_feeds(names, feeds, "engine")
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            binding = self._execute(feeds)
            outs = {n: t.clone() for n, t in binding.outputs.items()}
        caller.wait_stream(self.stream)
        for t in outs.values():
            t.record_stream(caller)
        return outs

    def _execute(self, tensors: dict[str, torch.Tensor]) -> _Binding:
        """Copy ``tensors`` into the binding of their shapes and run it (graph replay, or enqueue and, with CUDA
        graphs, capture); on ``self.stream``, which the caller has made current."""
        key = tuple((n, tuple(int(d) for d in tensors[n].shape)) for n in self.input_names)
        binding = self._bindings.get(key) or self._bind(key)
        for n, t in tensors.items():
            binding.inputs[n].copy_(t, non_blocking=True)
        if binding.graph is not None:
            binding.graph.replay()
        else:
            self._enqueue(binding)
            if self.cuda_graph:
                self._capture(binding)
        return binding

    def _bind(self, key: ShapeKey) -> _Binding:
        """Set the input shapes on a context and allocate torch CUDA buffers for them."""
        import torch

        engine = self.engine
        context = self._graph_context() if self.cuda_graph else self._context or engine.create_execution_context()
        device = torch.device("cuda", self.device)
        inputs = {}
        for name, shape in key:
            if not context.set_input_shape(name, shape):
                lo, opt, hi = (_dims(d) for d in engine.get_tensor_profile_shape(name, 0))
                raise ValueError(f"input '{name}' shape {shape} is outside engine '{self.plan.name}' profile "
                                 f"(min {lo}, opt {opt}, max {hi}); rebuild with other --min/--max-batch")
            inputs[name] = torch.empty(shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)), device=device)
        outputs = {}
        for name in self._outputs:
            shape = _dims(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output '{name}' of '{self.plan.name}' has unresolved shape {shape}")
            outputs[name] = torch.empty(shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)), device=device)
        binding = _Binding(context=context, inputs=inputs, outputs=outputs)
        self._bindings[key] = binding  # without CUDA graphs the shared context is re-bound on every run
        return binding

    def _enqueue(self, binding: _Binding) -> None:
        context = binding.context
        for name, shape in ((n, tuple(t.shape)) for n, t in binding.inputs.items()):
            context.set_input_shape(name, shape)
        for name, tensor in [*binding.inputs.items(), *binding.outputs.items()]:
            context.set_tensor_address(name, tensor.data_ptr())
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of '{self.plan.name}' failed (see the TensorRT log above)")

    def _graph_context(self) -> trt.IExecutionContext:
        """A new execution context on the activation buffer that every CUDA-graph context shares (allocated at the
        first one, ``device_memory_size_v2`` bytes; TensorRT < 10: ``device_memory_size``)."""
        import tensorrt as trt

        engine = self.engine
        v2 = hasattr(engine, "device_memory_size_v2")
        size = int(engine.device_memory_size_v2 if v2 else engine.device_memory_size)
        if self._activation_memory is None or self._activation_memory.numel() < size:
            self._activation_memory = self._allocate(max(size, 1))
        ptr = self._activation_memory.data_ptr()
        if v2:
            context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            context.set_device_memory(ptr, size)
        else:  # TensorRT 8.x
            context = engine.create_execution_context_without_device_memory()
            context.device_memory = ptr  # type: ignore[attr-defined]  # TensorRT 8.x only (absent from 10.x stubs)
        return context

    def _allocate(self, nbytes: int) -> torch.Tensor:
        """``nbytes`` of device memory as a torch uint8 tensor on this session's GPU."""
        import torch

        return torch.empty(nbytes, dtype=torch.uint8, device=torch.device("cuda", self.device))

    def _capture(self, binding: _Binding) -> None:
        """Capture this binding's enqueue in a CUDA graph (after the warm-up enqueue that just ran). An enqueue that
        fails during capture leaves no graph (a replay would return stale outputs): RuntimeError."""
        import torch

        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        enqueued = False
        with torch.cuda.graph(graph, stream=self.stream):
            enqueued = bool(binding.context.execute_async_v3(self.stream.cuda_stream))
        if not enqueued:
            binding.graph = None
            del graph
            raise RuntimeError(f"TensorRT enqueue of '{self.plan.name}' failed while capturing a CUDA graph "
                               "(see the TensorRT log above); no graph kept")
        binding.graph = graph

    def _torch_dtype(self, trt_dtype: trt.DataType) -> torch.dtype:
        import tensorrt as trt
        import torch

        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT8: torch.int8,
                 trt.DataType.INT32: torch.int32, trt.DataType.BOOL: torch.bool, trt.DataType.UINT8: torch.uint8}
        for name, torch_name in (("INT64", "int64"), ("BF16", "bfloat16")):  # TensorRT >= 9/10 only
            if hasattr(trt.DataType, name):
                table[getattr(trt.DataType, name)] = getattr(torch, torch_name)
        if trt_dtype not in table:
            raise UserError(f"engine '{self.plan.name}' has an I/O tensor of unsupported type {trt_dtype}")
        return table[trt_dtype]


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    """A ``trt.Dims`` as a tuple of ints (-1 for an unresolved dimension)."""
    return tuple(int(dims[i]) for i in range(len(dims)))
