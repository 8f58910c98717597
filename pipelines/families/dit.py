"""DiT (``DiTPipeline``): class-conditional ``DiTTransformer2DModel`` (ImageNet's 1000 classes + the null class),
learned sigma, VAE, the folder's scheduler (DDIM / DPM-Solver).

No text encoder: ``--class-labels`` gives one label per image, the null class is the unconditional row
(pipelines/families/transformer_prompts.py, ``class_conditioning``). Kept float by default: the time-step and
class embedders of every block (``norm1/emb``), ``pos_embed`` and the output projections ``proj_out_1/2``.
"""

from __future__ import annotations

from pipelines.families.family import Family
from pipelines.families.flow_defaults import ddpm_scheduler_config, needs_text_encoders
from pipelines.families.transformer_parts import TransformerParts, learned_sigma_feeds

KEEP_FLOAT = ("*/norm1/emb/*", "*/pos_embed/*", "*/proj_out_1/*", "*/proj_out_2/*")

FAMILY = Family(
    name="dit",
    description="DiT: class-conditional DiTTransformer2DModel (learned sigma), VAE",
    pipeline_classes=("DiTPipeline",),
    denoiser_folder="transformer",
    denoiser_classes=("DiTTransformer2DModel",),
    text_encoders=(),
    keep_float=KEEP_FLOAT,
    default_scheduler=ddpm_scheduler_config,
    raw_conditioning=needs_text_encoders,
    transformer=TransformerParts("dit", (), None, feeds=learned_sigma_feeds),
)
