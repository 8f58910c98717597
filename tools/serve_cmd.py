"""``python -m tools serve WORK``: Triton Inference Server (PyTriton) hosting the work folder's pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.schedulers import SCHEDULERS
from serving.config import DEFAULT_MODEL_NAME, ServeConfig
from serving.server import serve_until_signal
from tools.cli_parser import CliParser, add_backend, add_clipped_model_output


def parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog="python -m tools serve", description=__doc__)
    p.add_argument("work", type=Path, help="work folder made by export (and quantize for --precision int8)")
    model = p.add_argument_group("model")
    add_backend(model, "runs the UNet")
    model.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp8", "fp16"],
                       help="fp16: TensorRT engines only")
    model.add_argument("--scheduler", default="ddim", choices=list(SCHEDULERS))
    model.add_argument("--steps", type=int, default=50, help="steps of a request that sends none")
    model.add_argument("--max-steps", type=int, default=250, help="largest steps a request may ask for")
    model.add_argument("--guidance-scale", type=float, default=7.5,
                       help="text-to-image models: guidance of a request that sends none (as sample's default)")
    add_clipped_model_output(model)
    batching = p.add_argument_group("batching and instances")
    batching.add_argument("--max-batch", type=int, default=16, help="images per Triton batch (= UNet batch)")
    batching.add_argument("--queue-delay-us", type=int, default=2000,
                          help="how long Triton's dynamic batcher may hold a request to fill a batch")
    batching.add_argument("--instances", type=int, default=1, help="model instances, each with its own session")
    batching.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per instance (0 = all)")
    net = p.add_argument_group("network")
    net.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="the Triton model name clients call")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    net.add_argument("--http-port", type=int, default=8000)
    net.add_argument("--grpc-port", type=int, default=8001)
    net.add_argument("--metrics-port", type=int, default=8002)
    net.add_argument("--log-verbose", type=int, default=0, help="Triton's log verbosity")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        work=args.work, precision=args.precision, backend=args.backend, scheduler=args.scheduler,
        steps=args.steps, max_steps=args.max_steps, max_batch=args.max_batch, instances=args.instances,
        threads=args.threads, queue_delay_us=args.queue_delay_us,
        use_clipped_model_output=args.use_clipped_model_output, guidance_scale=args.guidance_scale,
        model_name=args.model_name, host=args.host,
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port)


def main(argv: list[str]) -> int:
    args = parse(argv)
    return serve_until_signal(config_from(args), log_verbose=args.log_verbose)
