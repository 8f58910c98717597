"""The transformer families on ONNX Runtime against diffusers' own pipelines (FP32, same initial latents).

Each tiny pipeline (tests/tiny_pipelines.py) is exported component by component (exporter/text_encoders.py,
exporter/transformer_export.py, the VAE decoder), then run through the DenoiseRunner with the family's conditioning,
denoiser feeds and scheduler set-up; final latents (in the layout diffusers returns with ``output_type="latent"``)
and images must agree with diffusers' to >= 60 dB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines.ort_session import OrtSession
from exporter.components import export_vae_decoder
from exporter.text_encoders import TextEncoderExport, export_family_text_encoder
from exporter.transformer_export import denoiser_signature, export_denoiser
from pipelines.denoiser_adapter import AdaptedDenoiser, DenoiserFeeds
from pipelines.families import transformer_prompts as tp
from pipelines.flow_matching import FlowSchedule, flow_scheduler
from pipelines.flux_latents import latent_image_ids, pack_latents, text_ids, unpack_latents
from pipelines.prompt_encoder import PromptEncoder, TextEncoderSpec
from pipelines.runner import DenoiseRunner, initial_noise, to_images
from pipelines.tokenizers import load_tokenizer

PROMPTS = ["a photo of 3", "digit seven, thin"]
STEPS = 4
CLIP_LEN, T5_LEN = 24, 16
LATENT = (4, 8, 8)


def _db(ours: np.ndarray, ref: np.ndarray, peak: float | None = None) -> float:
    mse = float(np.mean((ours - ref) ** 2))
    peak = float(np.max(np.abs(ref))) if peak is None else peak
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@dataclass
class Exported:
    folder: Path
    work: Path
    encoders: list[TextEncoderSpec]
    vae: dict[str, Any]


# (subfolder, tokenizer, transformers class, export spec) per family's text encoders
ENCODERS: dict[str, list[tuple[str, str, str, TextEncoderExport]]] = {
    "sd3": [("text_encoder", "tokenizer", "CLIPTextModelWithProjection",
             TextEncoderExport("clip", CLIP_LEN, "penultimate_hidden_state", "text_embeds")),
            ("text_encoder_2", "tokenizer_2", "CLIPTextModelWithProjection",
             TextEncoderExport("clip", CLIP_LEN, "penultimate_hidden_state", "text_embeds")),
            ("text_encoder_3", "tokenizer_3", "T5EncoderModel", TextEncoderExport("t5", T5_LEN, "last_hidden_state"))],
    "flux": [("text_encoder", "tokenizer", "CLIPTextModel",
              TextEncoderExport("clip", CLIP_LEN, "last_hidden_state", "pooler_output")),
             ("text_encoder_2", "tokenizer_2", "T5EncoderModel", TextEncoderExport("t5", T5_LEN, "last_hidden_state"))],
    "pixart": [("text_encoder", "tokenizer", "T5EncoderModel",
                TextEncoderExport("t5", T5_LEN, "last_hidden_state", attention_mask=True))],
    "dit": [],
}
DENOISERS = {"sd3": ("SD3Transformer2DModel", CLIP_LEN + T5_LEN), "flux": ("FluxTransformer2DModel", T5_LEN),
             "pixart": ("PixArtTransformer2DModel", T5_LEN), "dit": ("DiTTransformer2DModel", None)}


def _export(folder: Path, kind: str, work: Path) -> Exported:
    import diffusers
    import transformers

    work.mkdir(parents=True)
    specs = []
    for sub, tok, cls, spec in ENCODERS[kind]:
        if not (folder / sub).is_dir():
            continue
        enc = getattr(transformers, cls).from_pretrained(folder / sub, local_files_only=True).eval()
        rec = export_family_text_encoder(enc, spec, sub, cls, folder / tok, work, 1e-4)
        specs.append(TextEncoderSpec(sub, rec["file"], folder / tok, spec.sequence_length, spec.hidden_output,
                                     spec.pooled_output))
    cls, text_len = DENOISERS[kind]
    model = getattr(diffusers, cls).from_pretrained(folder / "transformer").eval()
    sig = denoiser_signature(kind, model, LATENT[1:], text_len, vae_scale=2)
    export_denoiser(model, sig, work / "model.onnx")
    vae = export_vae_decoder(folder / "vae", LATENT, work, 1e-4)
    return Exported(folder, work, specs, vae)


@pytest.fixture(scope="module")
def exported(tiny_transformer_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    root = tmp_path_factory.mktemp("transformer-parity")
    kinds = {"sd3": "sd3", "sd3-no-t5": "sd3", "flux": "flux", "pixart-alpha": "pixart", "pixart-sigma": "pixart",
             "dit": "dit"}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, name: str) -> Exported:
            self[name] = _export(tiny_transformer_dirs[name], kinds[name], root / name)
            return self[name]

    return Lazy()


@contextlib.contextmanager
def _encoder(ex: Exported) -> Iterator[PromptEncoder]:
    with contextlib.ExitStack() as stack:
        sessions = [stack.enter_context(OrtSession(ex.work / s.file)) for s in ex.encoders]
        yield PromptEncoder(tuple(ex.encoders), sessions, [load_tokenizer(s.tokenizer_dir) for s in ex.encoders])


def _run(ex: Exported, cond: Any, noise: np.ndarray, scheduler: Any, feeds: DenoiserFeeds) -> np.ndarray:
    with AdaptedDenoiser(OrtSession(ex.work / "model.onnx"), feeds) as denoiser:
        return DenoiseRunner(denoiser, scheduler).sample(noise, STEPS, cond=cond)


def _decode(ex: Exported, latents: np.ndarray) -> np.ndarray:
    z = latents / ex.vae["scaling_factor"] + (ex.vae["shift_factor"] or 0.0)
    with OrtSession(ex.work / "vae_decoder.onnx") as vae:
        return to_images(vae.run({"latents": z.astype(np.float32)})["images"])


def _diffusers(cls_name: str, folder: Path, latent: bool, **kw: Any) -> np.ndarray:
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(folder, local_files_only=True, **kw.pop("load", {}))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(num_inference_steps=STEPS, output_type="latent" if latent else "np", **kw).images
    return np.asarray(out) if latent else np.asarray(out).transpose(0, 3, 1, 2)


def _scheduler(folder: Path, schedule: FlowSchedule | None = None) -> Any:
    import diffusers
    from common.jsonfile import read_json

    cfg = read_json(folder / "scheduler" / "scheduler_config.json")
    assert cfg is not None
    sched = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
    return sched if schedule is None else flow_scheduler(sched, schedule)


@pytest.mark.parametrize("name, negative", [("sd3", None), ("sd3", "blurry"), ("sd3-no-t5", None)])
def test_sd3_matches_diffusers(exported: dict[str, Exported], name: str, negative: str | None) -> None:
    ex = exported[name]
    noise = initial_noise((2, *LATENT), 0)
    with _encoder(ex) as enc:
        cond = tp.sd3_conditioning(enc, PROMPTS, negative, 7.0, (T5_LEN, 32))
        other = tp.sd3_conditioning(enc, ["zzz", "qqq"], negative, 7.0, (T5_LEN, 32))
    sched = _scheduler(ex.folder, FlowSchedule(flux_sigmas=False, always_mu=False, image_seq_len=16,
                                               default_max_shift=1.16))
    ours = _run(ex, cond, noise, sched, DenoiserFeeds())
    load = {"text_encoder_3": None, "tokenizer_3": None} if name == "sd3-no-t5" else {}
    kw = dict(prompt=PROMPTS, negative_prompt=None if negative is None else [negative] * 2, guidance_scale=7.0,
              latents=torch.from_numpy(noise), max_sequence_length=T5_LEN, height=16, width=16, load=load)
    ref = _diffusers("StableDiffusion3Pipeline", ex.folder, True, **dict(kw, load=load))
    assert _db(ours, ref) >= 60.0
    assert _db(_decode(ex, ours), _diffusers("StableDiffusion3Pipeline", ex.folder, False, **kw), 1.0) >= 60.0
    assert _db(_run(ex, other, noise, sched, DenoiserFeeds()), ours) < 40.0


@pytest.mark.parametrize("true_cfg", [False, True])
def test_flux_matches_diffusers(exported: dict[str, Exported], true_cfg: bool) -> None:
    ex = exported["flux"]
    noise = pack_latents(initial_noise((2, *LATENT), 1))  # FluxPipeline's ``latents=`` layout: N×16 tokens×16
    negative, scale = ("blurry", 2.5) if true_cfg else (None, 1.0)
    with _encoder(ex) as enc:
        cond = tp.flux_conditioning(enc, PROMPTS, 3.5, negative, scale)
        low = tp.flux_conditioning(enc, PROMPTS, 1.0, negative, scale)
    assert cond.guided == true_cfg
    feeds = DenoiserFeeds(fixed={"txt_ids": text_ids(T5_LEN), "img_ids": latent_image_ids(4, 4)})
    sched = _scheduler(ex.folder, FlowSchedule(flux_sigmas=True, always_mu=True, image_seq_len=16))
    ours = _run(ex, cond, noise, sched, feeds)
    kw = dict(prompt=PROMPTS, guidance_scale=3.5, latents=torch.from_numpy(noise), max_sequence_length=T5_LEN,
              height=16, width=16)
    if true_cfg:
        kw.update(negative_prompt=[negative] * 2, true_cfg_scale=scale)
    ref = _diffusers("FluxPipeline", ex.folder, True, **kw)
    assert ours.shape == ref.shape == (2, 16, 16)
    assert _db(ours, ref) >= 60.0
    images = _decode(ex, unpack_latents(ours, LATENT[1:]))
    assert _db(images, _diffusers("FluxPipeline", ex.folder, False, **kw), 1.0) >= 60.0
    # the guidance embedding is fed: another scale gives another result
    assert _db(_run(ex, low, noise, sched, feeds), ours) < 50.0


@pytest.mark.parametrize("name", ["pixart-alpha", "pixart-sigma"])
def test_pixart_matches_diffusers(exported: dict[str, Exported], name: str) -> None:
    ex = exported[name]
    noise = initial_noise((2, *LATENT), 2)
    with _encoder(ex) as enc:
        cond = tp.pixart_conditioning(enc, PROMPTS, None, 4.5, (16, 16))
    ours = _run(ex, cond, noise, _scheduler(ex.folder), DenoiserFeeds(keep_channels=LATENT[0]))
    cls = "PixArtAlphaPipeline" if name == "pixart-alpha" else "PixArtSigmaPipeline"
    kw = dict(prompt=PROMPTS, guidance_scale=4.5, latents=torch.from_numpy(noise), max_sequence_length=T5_LEN,
              height=16, width=16, use_resolution_binning=False, clean_caption=False)
    ref = _diffusers(cls, ex.folder, True, **kw)
    assert _db(ours, ref) >= 60.0
    assert _db(_decode(ex, ours), _diffusers(cls, ex.folder, False, **kw), 1.0) >= 60.0
    if name == "pixart-alpha":  # the resolution conditions reach the graph
        sized = tp.pixart_conditioning
        with _encoder(ex) as enc:
            other = sized(enc, PROMPTS, None, 4.5, (32, 16))
        assert _db(_run(ex, other, noise, _scheduler(ex.folder), DenoiserFeeds(keep_channels=4)), ours) < 60.0


def test_dit_matches_diffusers(exported: dict[str, Exported]) -> None:
    import diffusers

    ex = exported["dit"]
    noise = initial_noise((2, *LATENT), 3)  # DiTPipeline draws randn(shape, generator) itself
    cond = tp.class_conditioning([3, 7], 1000, 4.0)
    ours = _run(ex, cond, noise, _scheduler(ex.folder), DenoiserFeeds(keep_channels=LATENT[0]))
    pipe = diffusers.DiTPipeline.from_pretrained(ex.folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    seen: list[np.ndarray] = []
    decode = pipe.vae.decode
    pipe.vae.decode = lambda z, **kw: (seen.append(z.numpy().copy()), decode(z, **kw))[1]  # type: ignore[method-assign]
    images = pipe(class_labels=[3, 7], guidance_scale=4.0, num_inference_steps=STEPS,
                  generator=torch.manual_seed(3), output_type="np").images.transpose(0, 3, 1, 2)
    ref_latents = seen[0] * pipe.vae.config.scaling_factor
    assert _db(ours, ref_latents) >= 60.0
    assert _db(_decode(ex, ours), images, 1.0) >= 60.0
    assert _db(_run(ex, tp.class_conditioning([5, 1], 1000, 4.0), noise, _scheduler(ex.folder),
                    DenoiserFeeds(keep_channels=4)), ours) < 50.0
