"""Llama (Llama 2/3 with rope scaling, SmolLM) and Mistral (with its sliding window).

The plain case of the shared decoder (models/decoder.py): pre-norm attention and SwiGLU MLP, no
biases. Mistral's `sliding_window` applies to every layer.
"""

from dataclasses import dataclass

from mistralcli.models import register
from mistralcli.models.decoder import DecoderArgs, DecoderModel


@dataclass
class LlamaArgs(DecoderArgs):
    pass


@register("llama")
class LlamaModel(DecoderModel):
    args_class = LlamaArgs
