"""ServeConfig checks every flag at construction (UserError naming it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import UserError
from serving.config import ServeConfig


@pytest.mark.parametrize("kwargs, flag", [
    ({"steps": 0}, "--steps"), ({"max_batch": 0}, "--max-batch"), ({"instances": 0}, "--instances"),
    ({"steps": 300, "max_steps": 250}, "--max-steps"), ({"http_port": 0}, "--http-port"),
    ({"grpc_port": 8000}, "--grpc-port"), ({"model_name": "a/b"}, "--model-name"),
    ({"queue_delay_us": -1}, "--queue-delay-us"),
])
def test_bad_settings_name_the_flag(kwargs: dict[str, object], flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        ServeConfig(work=Path("w"), **kwargs)  # type: ignore[arg-type]


def test_url_of_a_server_on_every_interface_is_loopback() -> None:
    assert ServeConfig(work=Path("w"), host="0.0.0.0", http_port=9000).http_url == "http://127.0.0.1:9000"
