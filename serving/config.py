"""The server's configuration: one frozen dataclass that ``serve``, the tests and the load benchmark fill."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

DEFAULT_MODEL_NAME = "qdiff"


@dataclass(frozen=True)
class ServeConfig:
    """How to serve one work folder.

    ``steps`` is the step count of a request that sends none; a request may ask for 1..``max_steps``.
    ``max_batch`` bounds the images in one Triton batch (= one UNet batch, twice that many rows with guidance);
    ``queue_delay_us`` is how long Triton's dynamic batcher may hold a request to fill a batch (microseconds).
    ``instances`` model instances each open their own session (``threads`` intra-op threads each, 0 = all cores).
    ``guidance_scale`` is the classifier-free guidance of a text-to-image request that sends none (as ``sample``'s).
    Ports 0 are not allowed: Triton needs them fixed up front (tests pick free ones at run time).
    """

    work: Path
    precision: str = "fp32"
    backend: str = "auto"
    scheduler: str = "ddim"
    steps: int = 50
    max_steps: int = 250
    max_batch: int = 16
    instances: int = 1
    threads: int = 0
    queue_delay_us: int = 2000
    use_clipped_model_output: bool | None = None
    guidance_scale: float = 7.5
    model_name: str = DEFAULT_MODEL_NAME
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        for flag, value, low in (("--steps", self.steps, 1), ("--max-steps", self.max_steps, 1),
                                 ("--max-batch", self.max_batch, 1), ("--instances", self.instances, 1),
                                 ("--threads", self.threads, 0), ("--queue-delay-us", self.queue_delay_us, 0)):
            if value < low:
                raise UserError(f"{flag} must be >= {low}, got {value}")
        if self.steps > self.max_steps:
            raise UserError(f"--steps {self.steps} exceeds --max-steps {self.max_steps}")
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}
        for flag, port in ports.items():
            if not 1 <= port <= 65535:
                raise UserError(f"{flag} must be a port in 1..65535, got {port}")
        if len(set(ports.values())) != len(ports):
            raise UserError(f"--http-port, --grpc-port and --metrics-port must differ, got {sorted(ports.values())}")
        if not self.model_name.replace("-", "").replace("_", "").isalnum():
            raise UserError(f"--model-name '{self.model_name}' must be letters, digits, '-' or '_'")

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.http_port}"
