"""Export: the artifact container, its stream layout and codecs, code-size accounting and
the 16,000,000-byte limit. Quantization itself lives in pgolf.quant."""
