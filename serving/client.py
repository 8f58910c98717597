"""Calling a served model with PyTriton's ModelClient: seeds (+ steps, prompts) in, uint8 H×W×C images out."""

from __future__ import annotations

from collections.abc import Sequence
import warnings
from dataclasses import dataclass

import numpy as np

from common.errors import CheckFailed, UserError
from common.lazy import lazy_import

DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ImageRequest:
    """One request of ``len(seeds)`` images (one row each). ``steps`` None: the server's default.
    ``prompt``/``negative_prompt``/``guidance_scale`` are for text-to-image models (None: not sent)."""

    seeds: tuple[int, ...]
    steps: int | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None

    def inputs(self) -> dict[str, np.ndarray]:
        """The batched Triton inputs: every field B×1."""
        n = len(self.seeds)
        feeds = {"seed": np.array(self.seeds, dtype=np.int64).reshape(n, 1)}
        if self.steps is not None:
            feeds["steps"] = np.full((n, 1), self.steps, dtype=np.int32)
        for name, text in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
            if text is not None:
                feeds[name] = np.array([[text.encode("utf-8")]] * n, dtype=np.object_)
        if self.guidance_scale is not None:
            feeds["guidance_scale"] = np.full((n, 1), self.guidance_scale, dtype=np.float32)
        return feeds


def normalize_url(url: str) -> str:
    """``host:port`` -> ``http://host:port``; grpc:// and http:// are kept. Anything else is a UserError."""
    if "://" not in url:
        url = f"http://{url}"
    if not url.startswith(("http://", "grpc://")):
        raise UserError(f"URL '{url}' must start with http:// or grpc:// (or be host:port)")
    return url


class ImageClient:
    """A connection to one served model, reused across requests (one per thread: PyTriton's client is not
    thread-safe). ``timeout_s`` bounds each inference, ``init_timeout_s`` (default: min(60, timeout_s)) the wait
    for the model to be ready. An unreachable server is a UserError; an error response (e.g. a field out of range)
    is a CheckFailed carrying the server's message."""

    def __init__(self, url: str, model_name: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 init_timeout_s: float | None = None) -> None:
        self.url, self.model_name = normalize_url(url), model_name
        self.timeout_s = timeout_s
        self.init_timeout_s = min(60.0, timeout_s) if init_timeout_s is None else init_timeout_s
        self._client: object | None = None

    def __enter__(self) -> ImageClient:
        lazy_import("pytriton")
        from pytriton.client import ModelClient
        from pytriton.client.warnings import NotSupportedTimeoutWarning

        with warnings.catch_warnings():
            # PyTriton warns whenever the HTTP pool's timeouts differ from init_timeout_s (here: on purpose)
            warnings.simplefilter("ignore", NotSupportedTimeoutWarning)
            self._client = ModelClient(self.url, self.model_name, init_timeout_s=self.init_timeout_s,
                                       inference_timeout_s=self.timeout_s)
        return self

    def __exit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()  # type: ignore[attr-defined]

    def images(self, request: ImageRequest) -> np.ndarray:
        """Send one request; returns N×H×W×C uint8 images."""
        from pytriton.client.exceptions import PyTritonClientError, PyTritonClientTimeoutError
        from pytriton.client.warnings import NotSupportedTimeoutWarning

        assert self._client is not None, "use ImageClient as a context manager"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotSupportedTimeoutWarning)
                result = self._client.infer_batch(**request.inputs())  # type: ignore[attr-defined]
        except PyTritonClientTimeoutError as exc:
            raise UserError(f"no answer from '{self.url}' model '{self.model_name}' in time: {_last_line(exc)}") \
                from exc
        except PyTritonClientError as exc:
            raise CheckFailed(f"the server refused the request: {_last_line(exc)}") from exc
        except (OSError, ConnectionError, _connection_closed()) as exc:
            raise UserError(f"the connection to '{self.url}' failed: {type(exc).__name__}: {exc}") from exc
        return np.asarray(result["image"])


def request_images(url: str, request: ImageRequest, model_name: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                   init_timeout_s: float | None = None) -> np.ndarray:
    """One request on a fresh connection (see ImageClient); returns N×H×W×C uint8 images."""
    with ImageClient(url, model_name, timeout_s, init_timeout_s) as client:
        return client.images(request)


def _connection_closed() -> type[Exception]:
    """tritonclient's HTTP transport reports a server that went away mid-request with its own exception type."""
    try:
        from geventhttpclient.response import HTTPConnectionClosed

        return HTTPConnectionClosed  # type: ignore[no-any-return]
    except ImportError:
        return ConnectionError


def chunked(seeds: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """``seeds`` in consecutive chunks of at most ``size``."""
    return [tuple(seeds[i : i + size]) for i in range(0, len(seeds), size)]


def _last_line(exc: BaseException) -> str:
    """The meaningful line of a PyTriton error: the server sends a whole traceback; ours ends in
    ``RequestError: <field>: <message>``, Triton's own checks in one line naming the input."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for marker in ("RequestError: ", "Error: ", "error: "):
        found = [line for line in lines if marker in line]
        if found:
            return found[-1].split(marker, 1)[1] if marker == "RequestError: " else found[-1]
    return lines[-1] if lines else type(exc).__name__
