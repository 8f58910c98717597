import json
from pathlib import Path
import pytest
from tests.conftest import run_cli
from tests.validation.test_validate import FAST, quantized  # noqa: F401


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_probe(quantized: Path, backend: str) -> None:  # noqa: F811
    run_cli("validate", quantized, *FAST, "--backend", backend, "--min-cosine", "-1", "--min-snr", "-1", "--min-psnr", "-1")
    r = json.loads((quantized / "report" / "validate.json").read_text())
    print("PROBE", backend, [(round(s["cosine"], 4), round(s["snr_db"], 2)) for s in r["steps"]], r["images"])
