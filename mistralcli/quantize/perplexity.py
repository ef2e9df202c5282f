"""Perplexity as llama.cpp's `llama-perplexity` computes it, so the two figures compare: the text's tokens (BOS
added as the model's tokenizer adds it) cut into non-overlapping windows of `ctx` tokens, each window's first
token made BOS where the model takes one, and in each window only the second half scored (every token from
ctx/2 + 1 on, predicted from all the window before it). PPL = exp(mean negative log-likelihood); its error,
as llama.cpp's, from the variance of the per-token values.

The logits of each window come from the engine's model runner (the one compute path), a prompt chunk at a
time, in float32; the log-softmax is taken in float64."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mistralcli.errors import MistralError


@dataclass
class Perplexity:
    ppl: float
    error: float  # the standard error of the estimate, as llama.cpp prints it (PPL = x +/- error)
    tokens_scored: int
    windows: int
    ctx: int
    seconds: float
    per_window: list[float] = field(default_factory=list)  # the running PPL after each window (llama.cpp's [i])


def perplexity(loaded, text: str, ctx: int = 512, progress: Callable[[int, int, float], None] | None = None):
    """Of `text` under the loaded model (mistralcli.loading.loader.LoadedModel); progress(done, total, ppl)."""
    from mistralcli.engine.block_manager import BlockManager
    from mistralcli.engine.model_runner import ModelRunner
    from mistralcli.engine.paged_cache import PagedKVCache

    if ctx < 8:
        raise MistralError(f"--ctx {ctx}: a window of at least 8 tokens")
    if ctx > loaded.context_length:
        raise MistralError(f"--ctx {ctx}: more than {loaded.name}'s context ({loaded.context_length} tokens)")
    tokenizer = loaded.tokenizer
    tokens = tokenizer.encode(text, add_special=True, parse_special=False)
    if len(tokens) < 2 * ctx:
        raise MistralError(
            f"the text is {len(tokens)} tokens; perplexity with --ctx {ctx} needs at least {2 * ctx} (as llama.cpp)"
        )
    model = loaded.model
    args = model.args
    block_size = 16
    num_blocks = -(-ctx // block_size)
    cache = PagedKVCache(args.num_hidden_layers, num_blocks, block_size, args.num_key_value_heads, args.head_dim)
    runner = ModelRunner(model, cache, BlockManager(num_blocks, block_size))
    table = list(range(num_blocks))
    bos = tokenizer.bos_token_id if tokenizer.add_bos else None
    windows = len(tokens) // ctx
    first = ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    start_time = time.perf_counter()
    step = 512
    for w in range(windows):
        ids = np.array(tokens[w * ctx : (w + 1) * ctx], dtype=np.int64)
        targets = ids[first + 1 :].copy()
        if bos is not None:
            ids[0] = bos
        logits = np.concatenate(
            [
                runner.forward(ids[s : s + step], np.arange(s, min(s + step, ctx)), table, all_logits=True)
                for s in range(0, ctx, step)
            ]
        )
        scored = logits[first : ctx - 1].astype(np.float64)
        top = scored.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(scored - top).sum(axis=1)) + top[:, 0]
        values = log_z - scored[np.arange(len(targets)), targets]
        nll += float(values.sum())
        nll2 += float((values**2).sum())
        count += len(values)
        running.append(math.exp(nll / count))
        if progress is not None:
            progress(w + 1, windows, running[-1])
    mean = nll / count
    variance = nll2 / count - mean * mean
    ppl = math.exp(mean)
    error = ppl * math.sqrt(variance / (count - 1)) if count > 1 and variance > 0 else 0.0
    return Perplexity(ppl, error, count, windows, ctx, time.perf_counter() - start_time, running)
