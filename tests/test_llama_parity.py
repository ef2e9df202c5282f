"""Our llama forward (reference and CPU ops) against transformers on tiny random configs:
logits within 1e-4 in float32, for one-shot prefill and for token-by-token decoding with the cache."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from paged import OneSequence
from tiny_models import hf_logits, make_hf_model, saved_checkpoint, write_gguf

from mistralcli.loading import safetensors_dir
from mistralcli.models.llama import LlamaArgs, LlamaModel
from mistralcli.ops import get_ops

TOLERANCE = 1e-4
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
    "rope_theta": 500000.0,
}
CONFIGS = {
    "llama-gqa": ("llama", {}),
    "llama-mha-tied": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "llama-mqa-head-dim": ("llama", dict(num_key_value_heads=1, head_dim=32)),
    "llama3-rope-scaling": ("llama", dict(rope_parameters=LLAMA3_ROPE)),
    "llama-attention-bias": ("llama", dict(attention_bias=True)),
    "mistral": ("mistral", dict(num_key_value_heads=1, sliding_window=None)),
}
TOKENS = np.array([5, 17, 300, 2, 99, 99, 451, 0, 12, 200, 7, 64])


def ours(directory, backend):
    import json

    config = json.loads((directory / "config.json").read_text())
    return LlamaModel(LlamaArgs.from_dict(config), safetensors_dir.load_weights(directory), get_ops(backend))


def new_cache(model):
    return OneSequence(model, capacity=64, block_size=4)


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoint(request, tmp_path_factory):
    return saved_checkpoint(request.param, CONFIGS, tmp_path_factory)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_prefill_logits_match_transformers(checkpoint, backend):
    hf, directory = checkpoint
    model = ours(directory, backend)
    expected = hf_logits(hf, TOKENS)
    got = new_cache(model).forward(TOKENS, np.arange(len(TOKENS)), all_logits=True)
    assert np.abs(expected).max() > 0.5  # the logits carry signal, not just initialisation noise
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_decode_with_cache_matches_transformers(checkpoint, backend):
    hf, directory = checkpoint
    model = ours(directory, backend)
    expected = hf_logits(hf, TOKENS)
    cache = new_cache(model)
    split = 5
    rows = [cache.forward(TOKENS[:split], np.arange(split))[-1]]
    for pos in range(split, len(TOKENS)):
        rows.append(cache.forward(TOKENS[pos : pos + 1], np.array([pos]))[-1])
    np.testing.assert_allclose(np.stack(rows), expected[split - 1 :], rtol=0, atol=TOLERANCE)


def test_gguf_layout_matches_transformers(tmp_path, smollm2_path):
    """A GGUF written as llama.cpp's converter writes llama (Q/K rows permuted) loads and agrees."""
    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.loading.loader import load_model

    vocab = open_gguf(smollm2_path).metadata
    hf = make_hf_model("llama", vocab_size=len(vocab["tokenizer.ggml.tokens"]))
    path = tmp_path / "tiny.gguf"
    write_gguf(path, hf, vocab)
    loaded = load_model(str(path))
    assert loaded.model.args.rope_interleaved
    ids = np.array(loaded.tokenizer.encode("The capital of France is"))
    got = new_cache(loaded.model).forward(ids, np.arange(len(ids)), all_logits=True)
    np.testing.assert_allclose(got, hf_logits(hf, ids), rtol=0, atol=TOLERANCE)
