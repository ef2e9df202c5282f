"""The generation loop: stops, limits, streaming text that never splits a character."""

import numpy as np
import pytest

from mistralcli.errors import MistralError
from mistralcli.generation import GenerationStats, generate
from mistralcli.sampling import SamplingParams
from mistralcli.tokenizer.detokenizer import IncrementalDetokenizer

GREEDY = SamplingParams(temperature=0.0)


def chat(loaded, text):
    return loaded.tokenizer.encode(loaded.chat_template.render([{"role": "user", "content": text}]), add_special=False)


def test_incremental_detokenizer_keeps_characters_whole(smollm2):
    tok = smollm2.tokenizer
    text = "naïve 🤖 日本語 done"
    ids = tok.encode(text, add_special=False)
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stops_at_end_of_turn(smollm2):
    stats = GenerationStats()
    text = "".join(
        generate(
            smollm2.model,
            smollm2.tokenizer,
            chat(smollm2, "What is the capital of France?"),
            GREEDY,
            200,
            smollm2.context_length,
            stats,
        )
    )
    assert "Paris" in text and stats.finish_reason == "stop"
    assert stats.completion_tokens == len(stats.token_ids) < 200
    assert not set(stats.token_ids) & smollm2.tokenizer.eog_token_ids
    assert smollm2.tokenizer.decode(stats.token_ids) == text


def test_max_tokens_and_context_limits(smollm2):
    ids = chat(smollm2, "Write a long essay about the sea.")
    stats = GenerationStats()
    list(generate(smollm2.model, smollm2.tokenizer, ids, GREEDY, 5, smollm2.context_length, stats))
    assert (stats.finish_reason, stats.completion_tokens, stats.decode_steps) == ("length", 5, 4)
    stats = GenerationStats()
    list(generate(smollm2.model, smollm2.tokenizer, ids, GREEDY, 100, len(ids) + 3, stats))
    assert (stats.finish_reason, stats.completion_tokens) == ("length", 3)
    with pytest.raises(MistralError, match="context"):
        list(generate(smollm2.model, smollm2.tokenizer, ids, GREEDY, 5, len(ids)))
    with pytest.raises(MistralError, match="empty"):
        list(generate(smollm2.model, smollm2.tokenizer, [], GREEDY, 5, 100))


def test_seeded_sampling_is_reproducible(smollm2):
    ids = chat(smollm2, "Tell me a joke.")
    params = SamplingParams(temperature=1.2, top_k=0, top_p=1.0, min_p=0.0, seed=99)
    runs = [
        "".join(generate(smollm2.model, smollm2.tokenizer, ids, params, 12, smollm2.context_length)) for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_prefill_then_decode_equals_one_prefill(smollm2):
    """The cache holds exactly what a longer prefill would compute. Decode multiplies with int16
    activations, the one-token and many-token kernels round differently: tolerance 0.02."""
    from paged import OneSequence

    model = smollm2.model
    ids = np.array(chat(smollm2, "Hi there"))
    full = OneSequence(model).forward(ids, np.arange(len(ids)), all_logits=True)
    cache = OneSequence(model, block_size=2)
    cache.forward(ids[:-1], np.arange(len(ids) - 1))
    last = cache.forward(ids[-1:], np.array([len(ids) - 1]))
    np.testing.assert_allclose(last[0], full[-1], rtol=0, atol=0.02)
