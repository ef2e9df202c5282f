"""The generation loop for one request: prefill the prompt, then sample until a stop.

A thin loop over model.forward and the sampler; the engine (batching, paged cache) replaces it.
"""

import codecs
import time
from dataclasses import dataclass, field

import numpy as np

from mistralcli.errors import MistralError
from mistralcli.kv_cache import KVCache
from mistralcli.sampling import Sampler, SamplingParams


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_s: float = 0.0
    generation_s: float = 0.0
    decode_steps: int = 0  # forwards of one token each (the first token comes from the prefill)
    finish_reason: str | None = None
    token_ids: list[int] = field(default_factory=list)

    @property
    def prompt_tok_s(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def generation_tok_s(self) -> float:
        return self.decode_steps / self.generation_s if self.generation_s > 0 else 0.0


class IncrementalDetokenizer:
    """Turns token ids into text as they come, never splitting a UTF-8 character."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


def generate(model, tokenizer, prompt_ids: list[int], params: SamplingParams, max_tokens: int,
             context_length: int, stats: GenerationStats | None = None):
    """Yield text pieces as they are generated; fill `stats` (finish_reason "stop" or "length")."""
    stats = stats if stats is not None else GenerationStats()
    if not prompt_ids:
        raise MistralError("the prompt is empty")
    if len(prompt_ids) >= context_length:
        raise MistralError(f"the prompt is {len(prompt_ids)} tokens; the model's context holds {context_length}")
    a = model.args
    cache = KVCache(a.num_hidden_layers, a.num_key_value_heads, a.head_dim, max_capacity=context_length)
    sampler = Sampler(params)
    detok = IncrementalDetokenizer(tokenizer)
    history = list(prompt_ids)
    stats.prompt_tokens = len(prompt_ids)

    start = time.perf_counter()
    logits = model.forward(np.asarray(prompt_ids), np.arange(len(prompt_ids)), cache)
    stats.prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    max_tokens = min(max_tokens, context_length - len(prompt_ids))
    stats.finish_reason = "length"
    while stats.completion_tokens < max_tokens:
        token = sampler(logits[-1], history)
        if token in tokenizer.eog_token_ids:
            stats.finish_reason = "stop"
            break
        history.append(token)
        stats.token_ids.append(token)
        stats.completion_tokens += 1
        text = detok.push(token)
        if text:
            yield text
        if stats.completion_tokens >= max_tokens:
            break
        logits = model.forward(np.array([token]), np.array([len(history) - 1]), cache)
        stats.decode_steps += 1
    tail = detok.flush()
    if tail:
        yield tail
    stats.generation_s = time.perf_counter() - start
