"""Load test of the Triton server (``python -m tools serve``) against ``sample`` one request at a time, in one run.

    python -m benchmarks.serve_load [WORK] [--requests 32] [--clients 1 4 16] [--precisions fp32 int8] [--steps 20]
                                    [--rounds 2] [--servers 1:0:16 2:1:8] [--prompt TEXT] [--guidance-scale 7.5]

Every request is one image (seed k -> the image ``sample --seed k --num 1`` makes). Per precision and server setup, one server
(``serving.server.serve_until_signal`` in a child process: INSTANCES model instances of THREADS ONNX Runtime threads
each, Triton's dynamic batching up to MAX_BATCH images) and one in-process baseline (``sample``'s library path: one session, ``sample_images``
of one image per request, one request after the other). Rounds are interleaved (per round: baseline, then 1, 4, 16
clients, for each precision) so machine noise hits all rows alike; throughput is the median over rounds, latencies
are pooled. Batch sizes are Triton's own statistics (``/v2/models/<name>/stats``: executions per batch size).
The work folder needs ``model.onnx`` (export) and, for int8, the quantized model (calibrate + quantize).
A text-to-image work folder (exported from a pipeline folder, e.g. ``models/digits-t2i``) is loaded with one prompt
(``--prompt``, default: the first line of the model's ``prompts.txt``): request k is ``sample --prompt P --seed k
--num 1``; its table goes to the section ``serve_load_t2i``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from common.errors import CheckFailed, UserError, first_line
from common.workdir import WorkDir
from engines.backends import open_session
from pipelines.runner import initial_noise, sample_images
from engines.session import Session
from pipelines.conditioning_inputs import default_prompts
from pipelines.text2image import TextToImage, is_text_to_image, open_text_to_image
from pipelines.schedulers import make_scheduler
from serving.client import ImageClient, ImageRequest, request_images
from serving.config import ServeConfig
from serving.server import serve_until_signal

STARTUP_TIMEOUT_S = 300.0


@dataclass
class Row:
    """One (precision, mode) row: per-round throughput, pooled latencies, failures, Triton batch sizes."""

    precision: str
    mode: str  # "sample" or "N clients"
    rps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)  # first line of each failure
    batches: collections.Counter[int] = field(default_factory=collections.Counter)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def served(config: ServeConfig) -> Iterator[None]:
    """The server in a child process (the same library call as ``python -m tools serve``); SIGTERM at the end."""
    proc = multiprocessing.get_context("spawn").Process(target=serve_until_signal, args=(config,), daemon=False)
    proc.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _ready(config):
            if not proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server for {config.precision} did not become ready")
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.join(90)


def _ready(config: ServeConfig) -> bool:
    try:
        with urllib.request.urlopen(f"{config.http_url}/v2/models/{config.model_name}/ready", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def batch_counts(config: ServeConfig) -> collections.Counter[int]:
    """Triton's executions per batch size so far (cumulative)."""
    with urllib.request.urlopen(f"{config.http_url}/v2/models/{config.model_name}/stats", timeout=10) as r:
        stats = json.loads(r.read())
    counts: collections.Counter[int] = collections.Counter()
    for model in stats["model_stats"]:
        for b in model.get("batch_stats", []):
            counts[int(b["batch_size"])] += int(b["compute_infer"]["count"])
    return counts


def load(config: ServeConfig, clients: int, seeds: list[int], steps: int, row: Row, prompt: str | None = None) -> None:
    """``len(seeds)`` one-image requests from ``clients`` concurrent threads (one PyTriton client each)."""
    todo = list(seeds)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def worker(client: ImageClient) -> None:
        while True:
            with lock:
                if not todo:
                    return
                seed = todo.pop()
            start = time.perf_counter()
            error = ""
            try:
                client.images(ImageRequest((seed,), steps=steps, prompt=prompt))
            except (UserError, CheckFailed) as exc:  # refused, timed out or disconnected: a failed request
                error = first_line(exc)
            with lock:
                if error:
                    errors.append(error)
                else:
                    latencies.append(time.perf_counter() - start)

    with contextlib.ExitStack() as stack:  # one connection per client, opened before the clock starts
        conns = [stack.enter_context(ImageClient(config.http_url, config.model_name, timeout_s=600.0))
                 for _ in range(clients)]
        before = batch_counts(config)
        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
    row.rps.append(len(latencies) / seconds)
    row.latencies += latencies
    row.failed += len(errors)
    row.errors.update(errors)
    row.batches.update(batch_counts(config) - before)


def baseline(session: Session, scheduler: Any, shape: tuple[int, int, int], seeds: list[int], steps: int,
             row: Row) -> None:
    """``sample``'s library call (``sample_images``), one request (one image) after the other."""
    start = time.perf_counter()
    for seed in seeds:
        t0 = time.perf_counter()
        sample_images(session, scheduler, initial_noise((1, *shape), seed), steps, seed=seed)
        row.latencies.append(time.perf_counter() - t0)
    row.rps.append(len(seeds) / (time.perf_counter() - start))


def baseline_t2i(t2i: TextToImage, shape: tuple[int, int, int], prompt: str, guidance_scale: float,
                 seeds: list[int], steps: int, row: Row) -> None:
    """``sample --prompt``'s library calls (encode the prompt, denoise, decode), one request after the other."""
    start = time.perf_counter()
    for seed in seeds:
        t0 = time.perf_counter()
        cond = t2i.conditioning([prompt], None, guidance_scale)
        t2i.generate(cond, initial_noise((1, *shape), seed), steps, seed=seed)
        row.latencies.append(time.perf_counter() - t0)
    row.rps.append(len(seeds) / (time.perf_counter() - start))


def parse_setup(text: str) -> tuple[int, int, int]:
    """``INSTANCES:THREADS:MAX_BATCH`` -> the three integers."""
    try:
        instances, threads, max_batch = (int(v) for v in text.split(":"))
    except ValueError as exc:
        raise SystemExit(f"--servers '{text}': expected INSTANCES:THREADS:MAX_BATCH, e.g. 2:1:8") from exc
    return instances, threads, max_batch


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work", type=Path, nargs="?", default=REPO / "work" / "digits-ddpm")
    p.add_argument("--requests", type=int, default=32, help="requests (one image each) per row and round")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--servers", nargs="+", default=["1:0:16", "2:1:8"], metavar="I:T:B",
                   help="server setups, each INSTANCES:THREADS:MAX_BATCH (threads 0 = all cores)")
    p.add_argument("--scheduler", default="ddim")
    p.add_argument("--prompt", help="text-to-image models: the prompt of every request (default: the first line of "
                   "the model's prompts.txt)")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="text-to-image models")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    shape = tuple(info["inputs"]["sample"]["shape"][1:])
    text = is_text_to_image(info)
    prompt = None
    if text:
        prompt = args.prompt or next(iter(default_prompts(info)[0]), None)
        if not prompt:
            raise SystemExit(f"'{args.work}' is a text-to-image model without prompts.txt: give --prompt TEXT")
    elif args.prompt:
        raise SystemExit("--prompt: the work folder is not a text-to-image model")
    load_start = os.getloadavg()
    setups = [parse_setup(text) for text in args.servers]
    configs: dict[tuple[str, str], ServeConfig] = {}
    for precision in args.precisions:
        for instances, threads, max_batch in setups:
            http, grpc, metrics = free_ports(3)
            label = f"{instances}×{threads or 'all'} threads, batch ≤ {max_batch}"
            configs[(precision, label)] = ServeConfig(
                work=args.work, precision=precision, scheduler=args.scheduler, steps=args.steps, max_batch=max_batch,
                instances=instances, threads=threads, guidance_scale=args.guidance_scale, http_port=http,
                grpc_port=grpc, metrics_port=metrics)
    rows: dict[tuple[str, str], Row] = {}
    with contextlib.ExitStack() as stack:
        sessions = {}
        pipelines: dict[str, TextToImage] = {}
        scheduler = make_scheduler(args.scheduler, info["scheduler"])
        for precision in args.precisions:
            session, _ = open_session(work, precision, "auto")
            if text:
                assert prompt is not None
                pipelines[precision] = stack.enter_context(open_text_to_image(work.root, info, session, scheduler))
                baseline_t2i(pipelines[precision], shape, prompt, args.guidance_scale, [0], args.steps,
                             Row(precision, "warm-up"))
                continue
            sessions[precision] = stack.enter_context(session)
            sample_images(session, scheduler, initial_noise((1, *shape), 0), args.steps)  # warm-up
        for config in configs.values():
            stack.enter_context(served(config))
            for _ in range(config.instances):  # warm-up: each instance's first execution
                request_images(config.http_url, ImageRequest((0,), steps=args.steps, prompt=prompt), "qdiff",
                               timeout_s=600.0)
        next_seed = 1000
        for r in range(args.rounds):
            for precision in args.precisions:
                seeds = list(range(next_seed, next_seed + args.requests))
                next_seed += args.requests
                row = rows.setdefault((precision, "sample"), Row(precision, "`sample`, one at a time"))
                if text:
                    assert prompt is not None
                    baseline_t2i(pipelines[precision], shape, prompt, args.guidance_scale, seeds, args.steps, row)
                else:
                    baseline(sessions[precision], scheduler, shape, seeds, args.steps, row)
                for (config_precision, label), config in configs.items():
                    if config_precision != precision:
                        continue
                    for clients in args.clients:
                        row = rows.setdefault((precision, f"{label}/{clients}"),
                                              Row(precision, f"served ({label}), {clients} clients"))
                        load(config, clients, seeds, args.steps, row, prompt)
                        print(f"round {r + 1}: {precision} {label} {clients} clients {row.rps[-1]:.2f} req/s",
                              flush=True)
    load_end = os.getloadavg()
    header = ["precision", "mode", "requests/s", "images/s", "× sample", "p50 s", "p99 s", "p99/p50",
              "Triton batch sizes (executions)", "failed"]
    table = []
    for (precision, _), row in rows.items():
        base = statistics.median(rows[(precision, "sample")].rps)
        rps = statistics.median(row.rps)
        p50, p99 = percentile(row.latencies, 50), percentile(row.latencies, 99)
        sizes = ", ".join(f"{b}: {n}" for b, n in sorted(row.batches.items())) or "—"
        table.append([precision, row.mode, f"{rps:.2f}", f"{rps:.2f}", f"{rps / base:.2f}", f"{p50:.2f}",
                      f"{p99:.2f}", f"{p99 / p50:.2f}", sizes, row.failed])
    for row in rows.values():
        for error, n in row.errors.most_common():
            print(f"{row.precision} {row.mode}: {n} failed request(s): {error}")
    models = ", ".join(f"{pr}: `{work.model_for(pr).name}`" for pr in args.precisions)
    calib = ""
    if work.ranges.is_file():
        params = json.loads(work.ranges.read_text()).get("settings", {}).get("params", {})
        calib = (f" (INT8 calibrated with {params.get('method')}, {params.get('samples')} samples, "
                 f"{params.get('steps')} steps)") if params else ""
    note = (f"1-minute load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end (the machine is "
            f"shared); ")
    source = (info.get("text_to_image") or {}).get("model_dir") or str(args.work)
    what = (f"text to image, `{Path(source).name}`, prompt \"{prompt}\", guidance {args.guidance_scale:g}" if text
            else "models/digits-ddpm")
    body = "\n".join([
        *section_head(f"Serving under load (Triton via PyTriton, {what})", command_line(
            "benchmarks.serve_load", argv), note),
        f"- {args.requests} one-image requests per row and round (each client thread keeps one connection), {args.rounds} rounds interleaved, "
        f"{args.scheduler} {args.steps} steps. Server setups: `serve --instances I --threads T --max-batch B` "
        "(I×T threads, batch ≤ B); `sample` runs on all cores. images/s = requests/s (one image per request); "
        "requests/s is the median over rounds, latencies are pooled over rounds. `sample` is the library path of "
        "`python -m tools sample --num 1` in-process (session opened once). Batch sizes: Triton's statistics, "
        f"executions per batch size. Models: {models}{calib}.",
        "",
        markdown_table(header, table),
    ])
    print(body)
    if not args.no_write:
        write_section("serve_load_t2i" if text else "serve_load", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
