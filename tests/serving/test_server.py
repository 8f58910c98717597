"""The real Triton server (``python -m tools serve``) on loopback ports over the tiny UNet: health, images equal to
``sample``, bad input, a client that disconnects, shutdown with requests in flight. Loopback only, bounded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from common.errors import CheckFailed
from pipelines.lockstep import to_uint8_hwc
from pipelines.runner import to_images
from serving.client import ImageRequest, request_images
from tests.conftest import REPO, run_cli

pytest.importorskip("pytriton", reason="serving needs nvidia-pytriton: pip install --no-deps -r requirements-serve.txt")

STARTUP_TIMEOUT_S = 240.0  # a loaded 2-core machine can take a minute to start tritonserver and the stub
REQUEST_TIMEOUT_S = 120.0
MAX_STEPS = 1000


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1, chosen now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listening(port: int) -> bool:
    with contextlib.closing(socket.socket()) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    ports: list[int]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def metric(self, name: str) -> float:
        _, text = http_get(f"http://127.0.0.1:{self.ports[2]}/metrics")
        for line in text.splitlines():
            if line.startswith(name + "{") and 'model="qdiff"' in line:
                return float(line.rsplit(" ", 1)[1])
        return float("nan")


def start_server(work: Path, log: Path, *flags: str) -> Iterator[Served]:
    """``python -m tools serve WORK FLAGS`` on three free loopback ports, in its own process group, until ready;
    stopped with SIGTERM (SIGKILL of the group if it hangs) when the generator closes."""
    ports = free_ports(3)
    cmd = [sys.executable, "-m", "tools", "serve", str(work), *flags, "--http-port", str(ports[0]),
           "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    served = Served(proc, ports, log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while http_get(f"{served.url}/v2/models/qdiff/ready")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not become ready (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this fixture created: server, tritonserver, stub
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tiny_work: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``serve`` of the tiny work folder on three free loopback ports, in its own process group."""
    yield from start_server(tiny_work, tmp_path_factory.mktemp("serve") / "serve.log", "--steps", "8",
                            "--max-steps", str(MAX_STEPS), "--max-batch", "16")


def test_triton_health_readiness_and_metrics_endpoints(served: Served) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/qdiff/ready"):
        assert http_get(served.url + path)[0] == 200, path
    code, config = http_get(served.url + "/v2/models/qdiff/config")
    assert code == 200 and json.loads(config)["max_batch_size"] == 16
    assert served.metric("nv_inference_count") >= 0


def test_client_images_equal_sample(served: Served, tiny_work: Path, tmp_path: Path) -> None:
    """Served seed k == ``sample --seed k --num 1`` (same steps and scheduler): >= 60 dB."""
    assert run_cli("client", served.url, "--seed", 3, "--num", 3, "--steps", 6, "--out", tmp_path / "c.png") == 0
    served_images = np.load(tmp_path / "c.images.npy")
    assert served_images.shape == (3, 16, 16, 1) and served_images.dtype == np.uint8
    for k in (3, 5):
        assert run_cli("sample", tiny_work, "--seed", k, "--num", 1, "--steps", 6, "--out", tmp_path / f"s{k}.png") == 0
        ref = to_uint8_hwc(to_images(np.load(tmp_path / f"s{k}.samples.npy")))[0]
        mse = float(np.mean((served_images[k - 3].astype(np.float64) - ref) ** 2)) / 255.0**2
        assert mse == 0.0 or 10 * np.log10(1.0 / mse) >= 60.0
    assert (tmp_path / "c.png").is_file() and json.loads((tmp_path / "c.json").read_text())["seeds"] == [3, 4, 5]


def test_default_steps_and_the_grpc_endpoint(served: Served) -> None:
    grpc_url = f"grpc://127.0.0.1:{served.ports[1]}"
    a = request_images(grpc_url, ImageRequest((7,)), "qdiff", timeout_s=REQUEST_TIMEOUT_S)
    b = request_images(served.url, ImageRequest((7,), steps=8), "qdiff", timeout_s=REQUEST_TIMEOUT_S)
    np.testing.assert_array_equal(a, b)  # the server's --steps 8 is the default


def _post_infer(served: Served, inputs: list[dict[str, object]]) -> tuple[int, str]:
    body = json.dumps({"inputs": inputs}).encode()
    req = urllib.request.Request(f"{served.url}/v2/models/qdiff/infer", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SEED = {"name": "seed", "shape": [1, 1], "datatype": "INT64", "data": [1]}


@pytest.mark.parametrize("inputs, field, words", [
    ([{**SEED, "datatype": "FP32"}], "seed", "data-type"),
    ([{**SEED, "shape": [1, 2], "data": [1, 2]}], "seed", "shape"),
    ([{**SEED, "shape": [0, 1], "data": []}], "seed", "size"),  # an empty batch
    ([SEED, {"name": "steps", "shape": [1, 1], "datatype": "INT32", "data": [0]}], "steps", "out of range"),
    ([SEED, {"name": "steps", "shape": [1, 1], "datatype": "INT32", "data": [MAX_STEPS + 1]}], "steps",
     "out of range"),
    ([{"name": "steps", "shape": [1, 1], "datatype": "INT32", "data": [5]}], "seed", ""),  # required input missing
])
def test_bad_input_is_an_error_naming_the_field_and_the_server_keeps_serving(
        served: Served, inputs: list[dict[str, object]], field: str, words: str) -> None:
    code, body = _post_infer(served, inputs)
    assert code >= 400
    error = json.loads(body)["error"]
    assert f"'{field}'" in error or f"{field}:" in error, error
    assert words in error
    assert request_images(served.url, ImageRequest((1,), steps=2), "qdiff", timeout_s=REQUEST_TIMEOUT_S).shape[0] == 1


def test_client_library_reports_the_field(served: Served) -> None:
    with pytest.raises(CheckFailed, match="steps: 0 is out of range"):
        request_images(served.url, ImageRequest((1,), steps=0), "qdiff", timeout_s=REQUEST_TIMEOUT_S)


def test_a_client_that_disconnects_mid_request(served: Served) -> None:
    """A raw HTTP request for a long batch, closed right after sending: the server finishes it, keeps serving."""
    body = json.dumps({"inputs": [
        {"name": "seed", "shape": [4, 1], "datatype": "INT64", "data": [1, 2, 3, 4]},
        {"name": "steps", "shape": [4, 1], "datatype": "INT32", "data": [200] * 4}]}).encode()
    head = (f"POST /v2/models/qdiff/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    before = served.metric("nv_inference_request_success") + served.metric("nv_inference_request_failure")
    with socket.create_connection(("127.0.0.1", served.ports[0]), timeout=10) as s:
        s.sendall(head + body)
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while served.metric("nv_inference_request_success") + served.metric("nv_inference_request_failure") <= before:
        assert time.monotonic() < deadline, "the abandoned request never completed"
        time.sleep(0.2)
    assert request_images(served.url, ImageRequest((2,), steps=2), "qdiff", timeout_s=REQUEST_TIMEOUT_S).shape[0] == 1
    assert served.proc.poll() is None


def test_sigterm_lets_in_flight_requests_finish_and_frees_the_ports(served: Served) -> None:
    """Last test of the module: one long request executing and one queued behind it; SIGTERM; both complete,
    the server exits 0 and nothing listens on its ports any more. The long request starts short (a loaded machine
    must finish it within Triton's 30 s exit timeout) and doubles until the second one is seen waiting."""
    results: dict[str, object] = {}

    def call(name: str, request: ImageRequest) -> None:
        try:
            results[name] = request_images(served.url, request, "qdiff", timeout_s=REQUEST_TIMEOUT_S)
        except Exception as exc:  # recorded and asserted below
            results[name] = exc

    for steps in (100, 200, 400, 800):
        results.clear()
        long_one = threading.Thread(target=call, args=("long", ImageRequest(tuple(range(16)), steps=steps)))
        long_one.start()
        time.sleep(0.2)
        queued = threading.Thread(target=call, args=("queued", ImageRequest((99,), steps=3)))
        queued.start()
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while served.metric("nv_inference_pending_request_count") < 1 and "long" not in results:
            assert time.monotonic() < deadline, "the long request neither finished nor let one wait behind it"
            time.sleep(0.02)
        if "long" not in results:
            break  # the second request waits behind the long one: both are in flight
        long_one.join()
        queued.join()
    else:
        pytest.fail("no request ever waited behind the long one")
    served.proc.send_signal(signal.SIGTERM)
    long_one.join(REQUEST_TIMEOUT_S)
    queued.join(REQUEST_TIMEOUT_S)
    assert served.proc.wait(timeout=60) == 0, served.log.read_text()[-3000:]
    log = served.log.read_text()[-4000:]
    assert isinstance(results["long"], np.ndarray) and results["long"].shape == (16, 16, 16, 1), (results, log)
    assert isinstance(results["queued"], np.ndarray), (results, log)
    assert not any(listening(p) for p in served.ports)
    assert "SIGTERM received" in served.log.read_text()
