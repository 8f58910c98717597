"""``export --arch <pipeline>``: a random-weight pipeline exported whole; its tokenizer kept in the work folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import random_pipelines
from exporter.random_pipelines import PipelineArchitecture
from tests.conftest import run_cli

TINY = PipelineArchitecture(
    "tiny-sd",
    {"vocab_size": 100, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
     "max_position_embeddings": 12},
    {"sample_size": 4, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": [8, 16],
     "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
     "cross_attention_dim": 16, "attention_head_dim": 2, "norm_num_groups": 4},
    {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "block_out_channels": [8, 8],
     "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
     "norm_num_groups": 4, "sample_size": 8},
    random_pipelines.SD15_SCHEDULER, max_length=12)


def test_sd15_structure_is_the_real_size() -> None:
    arch = random_pipelines.PIPELINE_ARCHITECTURES["sd15"]
    assert arch.text_encoder["vocab_size"] == 49408 and arch.unet["cross_attention_dim"] == 768
    assert arch.vae["block_out_channels"] == [128, 256, 512, 512] and arch.max_length == 77


def test_export_random_pipeline_keeps_its_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(random_pipelines.PIPELINE_ARCHITECTURES, "tiny-sd", TINY)
    work = tmp_path / "w"
    assert run_cli("export", "--arch", "tiny-sd", work) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # the scratch source folder is gone
    info = json.loads((work / "export.json").read_text())
    assert info["source"]["arch"] == "tiny-sd" and info["peak_rss_gib"] > 0
    assert info["components"]["text_encoder"]["tokenizer_dir"] == str((work / "tokenizer").resolve())
    assert info["components"]["text_encoder"]["sequence_length"] == 12
    assert run_cli("sample", work, "--prompt", "a photo of 3", "--num", 1, "--steps", 2,
                   "--out", tmp_path / "s" / "g.png") == 0
