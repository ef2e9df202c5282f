"""Qwen2 / Qwen2.5: the shared decoder with biases on q, k and v, tied or untied output, and a sliding
window only where the config asks for it (`use_sliding_window`, from layer `max_window_layers` on).
Its byte-level BPE pre-tokenizer (`qwen2` in GGUF) lives in the tokenizer package.
"""

from dataclasses import dataclass

from mistralcli.models import register
from mistralcli.models.decoder import FULL, SLIDING, DecoderArgs, DecoderModel


@dataclass
class Qwen2Args(DecoderArgs):
    use_sliding_window: bool = False
    max_window_layers: int = 0

    @classmethod
    def adapt(cls, values: dict, config: dict) -> dict:
        if not values.get("use_sliding_window"):
            values["sliding_window"] = None
        elif values.get("layer_types") is None:
            values["layer_types"] = [
                SLIDING if i >= values.get("max_window_layers", 0) else FULL for i in range(values["num_hidden_layers"])
            ]
        return values


@register("qwen2")
class Qwen2Model(DecoderModel):
    args_class = Qwen2Args
