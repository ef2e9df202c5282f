"""Tokenizers: `tokenizer.json` through `tokenizers`, or built from a GGUF's embedded vocabulary."""

from mistralcli.tokenizer.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
