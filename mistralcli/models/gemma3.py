"""Gemma 3 (text): the shared decoder with embeddings scaled by sqrt(hidden), RMSNorm of each head of
q and k, norms after attention and after the MLP as well as before, a GeGLU (tanh) MLP, and five
sliding-window layers (with their own rope, theta 10000) to each global one. Attention scales by
1/sqrt(query_pre_attn_scalar).

Hugging Face checkpoints store every RMSNorm weight as w - 1 (Gemma's norm multiplies by 1 + w);
llama.cpp's converter adds the 1, so GGUF weights are used as they are.
"""

import math
from dataclasses import dataclass

from mistralcli.models import register
from mistralcli.models.decoder import FULL, SLIDING, DecoderArgs, DecoderModel

PATTERN = 6  # every sixth layer is global

# Gemma's own chat template (as its instruction-tuned checkpoints ship it, text content only), for
# files without one such as the base models' GGUFs: a system message opens the first user turn.
CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}"""


@dataclass
class Gemma3Args(DecoderArgs):
    @classmethod
    def adapt(cls, values: dict, config: dict) -> dict:
        for softcap in ("final_logit_softcapping", "attn_logit_softcapping"):
            if config.get(softcap):
                raise ValueError(f"{softcap} is not supported")
        values.setdefault("hidden_act", "gelu_pytorch_tanh")
        values.setdefault("query_pre_attn_scalar", 256)
        values.setdefault("rope_local_base_freq", 10000.0)
        values.setdefault("norm_offset", 1.0)
        values["embed_scale"] = math.sqrt(values["hidden_size"])
        if values.get("layer_types") is None:
            pattern = config.get("sliding_window_pattern") or config.get("_sliding_window_pattern") or PATTERN
            values["layer_types"] = [
                FULL if (i + 1) % pattern == 0 else SLIDING for i in range(values["num_hidden_layers"])
            ]
        return values

    @classmethod
    def adapt_gguf(cls, config: dict, metadata: dict, arch: str) -> dict:
        # as llama.cpp reads a gemma3 GGUF: the 27B model scales attention by hidden/heads
        head = (
            config["hidden_size"] // config["num_attention_heads"]
            if config["num_hidden_layers"] == 62
            else config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        )
        return {**config, "query_pre_attn_scalar": head, "norm_offset": 0.0}


@register("gemma3")
class Gemma3Model(DecoderModel):
    args_class = Gemma3Args
    default_chat_template = CHAT_TEMPLATE
    hf_names = [
        (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blk.\1.post_attention_norm.weight"),
        (r"model\.layers\.(\d+)\.pre_feedforward_layernorm\.weight", r"blk.\1.ffn_norm.weight"),
        (r"model\.layers\.(\d+)\.post_feedforward_layernorm\.weight", r"blk.\1.post_ffw_norm.weight"),
        (r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight", r"blk.\1.attn_q_norm.weight"),
        (r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight", r"blk.\1.attn_k_norm.weight"),
    ]
