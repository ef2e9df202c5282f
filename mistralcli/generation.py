"""Generation of one request as text: a thin loop over the engine's steps, decoding tokens to text
as they come (never splitting a UTF-8 character)."""

import dataclasses
import time
from dataclasses import dataclass, field

from mistralcli.errors import MistralError
from mistralcli.sampling import SamplingParams


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_s: float = 0.0
    generation_s: float = 0.0
    decode_steps: int = 0  # forwards of one token each (the first token comes from the prefill)
    finish_reason: str | None = None
    grammar_complete: bool | None = None  # with a constraint (params.structured): whether the output completes it
    token_ids: list[int] = field(default_factory=list)

    @property
    def prompt_tok_s(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def generation_tok_s(self) -> float:
        return self.decode_steps / self.generation_s if self.generation_s > 0 else 0.0


def generate(
    model,
    tokenizer,
    prompt_ids: list[int],
    params: SamplingParams,
    max_tokens: int,
    context_length: int,
    stats: GenerationStats | None = None,
    engine=None,
    kv_cache_dtype: str = "f32",
):
    """Yield text pieces as they are generated; fill `stats` (finish_reason "stop" or "length").

    One request through the engine (a private one sized for it, its cache holding kv_cache_dtype, unless
    `engine` is given)."""
    from mistralcli.engine.engine import Engine, EngineConfig, RequestError
    from mistralcli.engine.paged_cache import PagedKVCache, cache_dtype

    stats = stats if stats is not None else GenerationStats()
    room = context_length - len(prompt_ids)
    if room > 0:  # at most what the context leaves; a prompt that leaves nothing is the engine's to refuse
        max_tokens = min(max_tokens, room)
    params = dataclasses.replace(params, max_tokens=max_tokens)
    if engine is None:
        dtype = cache_dtype(kv_cache_dtype)
        kv_cache_mb = PagedKVCache.mib_for_tokens(model.args, len(prompt_ids) + max_tokens + 16, dtype)
        config = EngineConfig(max_num_seqs=1, kv_cache_mb=kv_cache_mb, kv_cache_dtype=kv_cache_dtype)
        engine = Engine(model, tokenizer, context_length, config)
    stats.prompt_tokens = len(prompt_ids)
    request_id = f"generate-{id(stats)}"
    try:
        engine.add_request(request_id, list(prompt_ids), params)
    except RequestError as exc:
        raise MistralError(str(exc)) from None
    start = time.perf_counter()
    first = None
    try:
        finished = False
        while not finished:
            for out in engine.step():
                if out.request_id != request_id:
                    continue
                now = time.perf_counter()
                if first is None:
                    first = now
                    stats.prompt_s = now - start
                else:
                    stats.decode_steps += len(out.new_token_ids)
                stats.token_ids += out.new_token_ids
                stats.completion_tokens += len(out.new_token_ids)
                if out.text:
                    yield out.text
                if out.finished:
                    stats.finish_reason = out.finish_reason
                    stats.grammar_complete = out.grammar_complete
                    finished = True
    finally:
        engine.abort(request_id)  # a reader that stops early (a closed pipe) frees the blocks
    stats.generation_s = time.perf_counter() - first if first is not None else 0.0
