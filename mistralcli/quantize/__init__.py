"""Quantization: the quantizers by type (blocks.py), the per-tensor policy of llama.cpp's mixes (policy.py),
a GGUF or a safetensors checkpoint (hf_source.py) written as a quantized GGUF (gguf_file.py), in-situ
quantization at load (isq.py), the importance matrix (imatrix.py) and perplexity (perplexity.py)."""

from mistralcli.quantize.blocks import K_TYPES, LEGACY_TYPES, quantize

__all__ = ["K_TYPES", "LEGACY_TYPES", "quantize"]
