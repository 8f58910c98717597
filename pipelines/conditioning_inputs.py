"""One conditioning path for every command (sample, calibrate, validate, sensitivity, pipeline).

What a user can give, in order of precedence:
- prompts (``--prompt`` / ``--prompts FILE``) for a text-to-image work folder: encoded with the folder's own
  tokenizer(s) and text encoder(s); the unconditional row is the negative prompt (the empty prompt by default, or
  zeros where an SDXL pipeline's ``force_zeros_for_empty_prompt`` says so);
- raw ``encoder_hidden_states`` (``--cond`` .npy, N×L×D, and ``--uncond``, 1×L×D or N×L×D) for any conditional UNet;
  without ``--uncond`` the unconditional row is the empty prompt's embedding when the folder has a text encoder,
  else zeros;
- nothing: a text-to-image folder uses the prompts listed in its source folder's ``prompts.txt`` (the bundled model
  has one); a bare conditional UNet gets seeded random embeddings (random-weight models), zeros as unconditional.
Image i is conditioned on row ``i mod N`` (Conditioning.unet_feeds), whatever the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from pipelines.conditioning import HIDDEN_STATES, Conditioning, conditioning_for
from pipelines.families.registry import family_of

PROMPTS_FILE = "prompts.txt"


@dataclass(frozen=True)
class ConditioningInputs:
    """What the user gave. random_seed: seeds the random embeddings of a bare conditional UNet
    (``raw_conditioning``)."""

    prompts: tuple[str, ...] = ()
    negative_prompt: str | None = None
    cond: np.ndarray | None = None
    uncond: np.ndarray | None = None
    guidance_scale: float = 7.5
    random_seed: int = 0
    prompts_source: str = ""  # where the prompts came from (recorded), e.g. "--prompt", a file path


def read_prompts(path: Path, flag: str = "--prompts") -> list[str]:
    """Non-blank lines of ``path`` (stripped); a missing, unreadable or empty file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} file '{path}' does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{flag} file '{path}' is not readable as UTF-8 text: {exc}") from exc
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise UserError(f"{flag} file '{path}' holds no prompt (one prompt a line)")
    return prompts


def prompts_from_flags(prompt: str | None, prompts_file: Path | None) -> tuple[tuple[str, ...], str]:
    """``--prompt TEXT`` and/or ``--prompts FILE`` -> (prompts, where they came from)."""
    prompts: list[str] = []
    source = []
    if prompt is not None:
        if not prompt.strip():
            raise UserError("--prompt is empty (give a text, or use --negative-prompt for the unconditional row)")
        prompts.append(prompt)
        source.append("--prompt")
    if prompts_file is not None:
        prompts += read_prompts(prompts_file)
        source.append(str(prompts_file))
    return tuple(prompts), " + ".join(source)


def default_prompts(info: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    """The prompts listed beside a text-to-image model (``<model_dir>/prompts.txt``), or none."""
    model_dir = (info.get("text_to_image") or {}).get("model_dir")
    path = Path(model_dir or ".") / PROMPTS_FILE
    if model_dir and path.is_file():
        return tuple(read_prompts(path, "the model's prompts")), str(path)
    return (), ""


def resolve_conditioning(work_root: Path, info: dict[str, Any], inputs: ConditioningInputs,
                         threads: int = 0) -> Conditioning | None:
    """The Conditioning every command samples with (None for an unconditional UNet); bad combinations are
    UserErrors naming the flag."""
    spec = info["inputs"].get("encoder_hidden_states")
    if spec is None:
        if inputs.prompts or inputs.negative_prompt is not None:
            raise UserError("--prompt/--prompts/--negative-prompt given but the model is unconditional (its UNet "
                            "takes no text): sample it without them")
        if inputs.cond is not None or inputs.uncond is not None:
            raise UserError("--cond/--uncond given but the model has no encoder_hidden_states input")
        return None
    _, length, dim = spec["shape"]
    text = info.get("text_to_image") is not None
    if inputs.prompts and inputs.cond is not None:
        raise UserError("give either prompts (--prompt/--prompts) or --cond embeddings, not both")
    if inputs.prompts or (text and inputs.cond is None):
        if not text:
            raise UserError("--prompt/--prompts need a text encoder: this work folder was exported from a UNet, not a "
                            "text-to-image pipeline folder (export the pipeline folder, or give --cond embeddings)")
        prompts = inputs.prompts or default_prompts(info)[0]
        if not prompts:
            raise UserError(f"'{work_root}' is a text-to-image model: give --prompt TEXT or --prompts FILE")
        return _encode(work_root, info, list(prompts), inputs, threads)
    refusal = family_of(info).raw_conditioning(info["inputs"])
    if refusal and inputs.cond is not None:
        raise UserError(f"--cond embeddings cannot drive this model: {refusal}")
    cond = None if inputs.cond is None else _check_rows(inputs.cond, "--cond", length, dim)
    uncond = None if inputs.uncond is None else _check_rows(inputs.uncond, "--uncond", length, dim)
    if inputs.negative_prompt is not None and (not text or uncond is not None):
        raise UserError("--negative-prompt needs a text encoder and no --uncond (it is encoded as the unconditional "
                        "row)")
    if uncond is None and cond is not None and text:  # the real unconditional row: the (empty) negative prompt's
        uncond = _encode(work_root, info, [inputs.negative_prompt or ""], ConditioningInputs(guidance_scale=1.0),
                         threads).cond
    result = raw_conditioning(info, cond, uncond, inputs.guidance_scale, inputs.random_seed)
    if cond is None:
        print("no --cond given: using seeded random N(0,1) text embeddings, as for a random-weight model")
    return result


def raw_conditioning(info: dict[str, Any], cond: np.ndarray | None = None, uncond: np.ndarray | None = None,
                     guidance_scale: float = 7.5, seed: int = 0) -> Conditioning | None:
    """``conditioning_for`` the exported model's inputs, once its family has said raw embeddings (given, or
    seeded random rows) can drive it; a UserError with the family's reason otherwise."""
    if info["inputs"].get(HIDDEN_STATES) is not None:
        refusal = family_of(info).raw_conditioning(info["inputs"])
        if refusal:
            raise UserError(refusal)
    return conditioning_for(info["inputs"], cond, uncond, guidance_scale, seed)


def _check_rows(arr: np.ndarray, flag: str, length: int, dim: int) -> np.ndarray:
    if arr.ndim != 3 or arr.shape[1:] != (length, dim):
        raise UserError(f"{flag} has shape {arr.shape}; the UNet takes N×{length}×{dim}")
    if arr.shape[0] < 1:
        raise UserError(f"{flag} has no rows")
    return arr.astype(np.float32, copy=False)


def _encode(work_root: Path, info: dict[str, Any], prompts: list[str], inputs: ConditioningInputs,
            threads: int) -> Conditioning:
    from pipelines.prompt_encoder import open_prompt_encoder
    from pipelines.text2image import TextToImageSpec, prompt_conditioning

    spec = TextToImageSpec.from_export_info(info, Path(work_root))
    with open_prompt_encoder(work_root, spec.text_encoders, threads) as encoder:
        return prompt_conditioning(spec, encoder, prompts, inputs.negative_prompt, inputs.guidance_scale)
