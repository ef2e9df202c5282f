"""Quantization: our quantizers by type (legacy.py: the 32-weight block types and BF16), each bit-exact with
the `gguf` package's reference where it has one."""

from mistralcli.quantize.legacy import LEGACY_TYPES, quantize

__all__ = ["LEGACY_TYPES", "quantize"]
