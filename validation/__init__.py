"""What quantization cost: image metrics, the digit-feature Fréchet distance, Polygraphy comparisons, reports."""
