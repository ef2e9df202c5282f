"""Quantization: the quantizers by type (blocks.py), the per-tensor policy of llama.cpp's mixes (policy.py),
a GGUF requantized (gguf_file.py), perplexity (perplexity.py)."""

from mistralcli.quantize.blocks import K_TYPES, LEGACY_TYPES, quantize

__all__ = ["K_TYPES", "LEGACY_TYPES", "quantize"]
