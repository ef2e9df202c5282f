"""The llama.cpp peer of `mistral bench --compare llama-cpp`, run in its own process.

python -m mistralcli.bench.llama_cpp MODEL THREADS GEN_TOKENS REPETITIONS PROMPT_LENGTHS(comma)
prints EngineFigures.to_dict() as JSON. The protocol is bench.figures.run_protocol, as for
mistralcli.
llama.cpp's CPU weight repacking is off (as in ../shared/bench): on some CPUs it crashes.
"""

import json
import sys
import time

import numpy as np

from mistralcli.bench.figures import DECODE_PROMPT_TOKENS, EngineFigures, run_protocol


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
    llm = Llama(
        model_path=model,
        n_ctx=n_ctx,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    figures.load_s = time.perf_counter() - start
    vocab = llm.n_vocab()

    def logits_argmax():
        return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).argmax())

    def prefill(ids):
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(ids)
        return None, logits_argmax()

    def decode(state, token, position):
        llm.eval([token])
        return logits_argmax()

    encode = lambda text: llm.tokenize(text.encode(), add_bos=False, special=False)
    run_protocol(figures, encode, prefill, decode, lengths, gen_tokens, repetitions)
    return figures.to_dict()


if __name__ == "__main__":
    model_path, threads, gen, reps, lengths = sys.argv[1:6]
    result = main(model_path, int(threads), int(gen), int(reps), [int(n) for n in lengths.split(",")])
    print(json.dumps(result))
