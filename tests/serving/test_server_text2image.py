"""The real Triton server (``python -m tools serve``) on loopback ports over the tiny SD pipeline: ``client
--prompt`` gives ``sample --prompt``'s image, bad input is an error naming the field and the server keeps serving,
SIGTERM stops it with nothing left listening. Loopback only, bounded (a few 2-step requests)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving.client import ImageRequest, request_images
from tests.conftest import run_cli
from tests.serving.test_server import REQUEST_TIMEOUT_S, Served, listening, start_server
from tests.serving.test_text2image import psnr, sample_png

pytest.importorskip("pytriton", reason="serving needs nvidia-pytriton: pip install --no-deps -r requirements-serve.txt")


@pytest.fixture(scope="module")
def served_t2i(tiny_sd_work: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``serve`` of the tiny SD work folder on three free loopback ports, in its own process group."""
    yield from start_server(tiny_sd_work, tmp_path_factory.mktemp("serve-t2i") / "serve.log", "--steps", "2",
                            "--max-steps", "10", "--guidance-scale", "5", "--max-batch", "4")


def test_client_prompt_image_equals_sample(served_t2i: Served, tiny_sd_work: Path, tmp_path: Path) -> None:
    """``client --prompt P --seed K`` == ``sample --prompt P --seed K --num 1`` (same steps, guidance): >= 60 dB."""
    assert run_cli("client", served_t2i.url, "--prompt", "a", "photo", "of", "3", "--seed", 4, "--num", 2,
                   "--steps", 3, "--guidance-scale", 4, "--negative-prompt", "blurry", "--out", tmp_path / "c.png") == 0
    served_images = np.load(tmp_path / "c.images.npy")
    assert served_images.shape == (2, 16, 16, 3) and served_images.dtype == np.uint8
    want = sample_png(tiny_sd_work, tmp_path / "s.png", "a photo of 3", 5, 3, 4.0, "blurry")
    assert psnr(served_images[1], want) >= 60.0
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["prompt"] == "a photo of 3" and record["seeds"] == [4, 5]
    # the server's defaults (--steps 2, --guidance-scale 5) are sample's with those flags
    default = request_images(served_t2i.url, ImageRequest((4,), prompt="a photo of 3"), "qdiff",
                             timeout_s=REQUEST_TIMEOUT_S)[0]
    assert psnr(default, sample_png(tiny_sd_work, tmp_path / "d.png", "a photo of 3", 4, 2, 5.0)) >= 60.0


def _post_infer(served: Served, inputs: list[dict[str, object]]) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{served.url}/v2/models/qdiff/infer", method="POST",
                                 data=json.dumps({"inputs": inputs}).encode())
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


PROMPT = {"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": ["a photo of 3"]}


@pytest.mark.parametrize("inputs, field, words", [
    ([{**PROMPT, "shape": [0, 1], "data": []}], "prompt", "got 0"),  # an empty prompt list
    ([{**PROMPT, "datatype": "INT64", "data": [3]}], "prompt", "data-type"),  # a wrong dtype
    ([{**PROMPT, "data": [" "]}], "prompt", "empty"),
    ([PROMPT, {"name": "guidance_scale", "shape": [1, 1], "datatype": "FP64", "data": [5.0]}], "guidance_scale",
     "data-type"),
    ([PROMPT, {"name": "steps", "shape": [1, 1], "datatype": "INT32", "data": [11]}], "steps", "out of range"),
    ([{"name": "seed", "shape": [1, 1], "datatype": "INT64", "data": [1]}], "prompt", ""),  # required input missing
])
def test_bad_input_is_an_error_naming_the_field_and_the_server_keeps_serving(
        served_t2i: Served, inputs: list[dict[str, object]], field: str, words: str) -> None:
    code, body = _post_infer(served_t2i, inputs)
    assert code >= 400
    error = json.loads(body)["error"]
    assert f"'{field}'" in error or f"{field}:" in error, error
    assert words in error, error
    assert request_images(served_t2i.url, ImageRequest((1,), steps=1, prompt="digit seven"), "qdiff",
                          timeout_s=REQUEST_TIMEOUT_S).shape == (1, 16, 16, 3)


def test_sigterm_stops_the_server_and_frees_the_ports(served_t2i: Served) -> None:
    """Last test of the module: SIGTERM, exit 0, nothing listens on the server's ports any more."""
    served_t2i.proc.send_signal(signal.SIGTERM)
    assert served_t2i.proc.wait(timeout=60) == 0, served_t2i.log.read_text()[-3000:]
    assert not any(listening(p) for p in served_t2i.ports)
