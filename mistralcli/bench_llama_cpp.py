"""The llama.cpp peer of `mistral bench --compare llama-cpp`, run in its own process.

python -m mistralcli.bench_llama_cpp MODEL THREADS GEN_TOKENS REPETITIONS PROMPT_LENGTHS(comma)
prints EngineFigures.to_dict() as JSON. Same protocol as bench_mistralcli: greedy decode of
GEN_TOKENS after a 16-token prompt, prefill of each length from an empty cache, warm-up excluded.
llama.cpp's CPU weight repacking is off (as in ../shared/bench): on some CPUs it crashes.
"""

import json
import sys
import time

import numpy as np

from mistralcli.bench import DECODE_PROMPT_TOKENS, EngineFigures, peak_rss_mib, prompt_ids, summary


def main(model: str, threads: int, gen_tokens: int, repetitions: int, lengths: list[int]) -> dict:
    import llama_cpp.llama_cpp as C

    default_params = C.llama_model_default_params

    def no_repack():
        params = default_params()
        params.use_extra_bufts = False
        return params

    C.llama_model_default_params = no_repack
    from llama_cpp import Llama

    figures = EngineFigures("llama.cpp")
    start = time.perf_counter()
    n_ctx = max(lengths + [DECODE_PROMPT_TOKENS + gen_tokens]) + 16
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    figures.load_s = time.perf_counter() - start
    vocab = llm.n_vocab()

    def prefill(ids):
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(ids)
        return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).argmax())

    encode = lambda text: llm.tokenize(text.encode(), add_bos=False, special=False)  # noqa: E731
    for length in lengths:
        ids = prompt_ids(encode, length)
        prefill(ids)
        values = []
        for _ in range(repetitions):
            start = time.perf_counter()
            prefill(ids)
            values.append(length / (time.perf_counter() - start))
        figures.prefill_tok_s[length] = summary(values)
    ids = prompt_ids(encode, DECODE_PROMPT_TOKENS)
    decode_values, ttft_values = [], []
    for rep in range(repetitions + 1):
        start = time.perf_counter()
        token = prefill(ids)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(gen_tokens):
            llm.eval([token])
            token = int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).argmax())
        if rep:
            decode_values.append(gen_tokens / (time.perf_counter() - start))
            ttft_values.append(ttft)
    figures.decode_tok_s = summary(decode_values)
    figures.ttft_s = summary(ttft_values)
    figures.peak_rss_mib = peak_rss_mib()
    return figures.to_dict()


if __name__ == "__main__":
    model_path, threads, gen, reps, lengths = sys.argv[1:6]
    result = main(model_path, int(threads), int(gen), int(reps), [int(n) for n in lengths.split(",")])
    print(json.dumps(result))
