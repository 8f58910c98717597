"""The denoising pipelines: loops, conditioning, tokenizers, schedulers, and one module per model family."""
