"""Embeddings: the encoder's kernels against their NumPy references; all-MiniLM-L6-v2 (BERT) against
sentence-transformers within 1e-4 cosine on held sentences, batched or not, truncated as it truncates; a decoder's
pooled hidden states against transformers' (SmolLM2); LLM.embed and its errors."""

import numpy as np
import pytest

from mistralcli.ops import get_ops
from mistralcli.reference.ops import ReferenceOps

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Quantum entanglement links particles across distances.",
    "How do I bake sourdough bread at home?",
    "Stock markets fell sharply after the announcement.",
    "Le chat est assis sur le tapis.",
    "I love programming in Python, especially with NumPy!",
    "Photosynthesis converts light energy into chemical energy.",
    "What's the weather like in Paris this weekend?",
    "Embeddings map text to vectors in a shared space.",
    "a",
    "Ünïcödé, emoji 🙂 and punctuation — all together.",
]


@pytest.fixture(scope="module")
def ops():
    return get_ops("cpu", threads=2)


def test_layernorm_gelu_pool_match_the_reference(ops):
    rng = np.random.default_rng(0)
    ref = ReferenceOps()
    x = (rng.standard_normal((37, 384)) * 3 + 1).astype(np.float32)
    w, b = rng.standard_normal(384).astype(np.float32), rng.standard_normal(384).astype(np.float32)
    np.testing.assert_allclose(ops.layernorm(x, w, b, 1e-12), ref.layernorm(x, w, b, 1e-12), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.gelu(x), ref.gelu(x), rtol=1e-6, atol=1e-6)
    starts = np.array([0, 5, 6, 20, 37])
    for mode in ("mean", "cls", "last"):
        np.testing.assert_allclose(ops.pool(x, starts, mode), ref.pool(x, starts, mode), rtol=1e-6, atol=1e-6)


def test_encoder_attention_sees_only_its_own_sequence(ops):
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((23, 4, 16)).astype(np.float32) for _ in range(3))
    starts = np.array([0, 1, 9, 23])
    ours = ops.encoder_attention(q, k, v, starts, 0.25)
    np.testing.assert_allclose(ours, ReferenceOps().encoder_attention(q, k, v, starts, 0.25), rtol=1e-5, atol=1e-5)
    # a sequence alone gives what it gives among others
    alone = ops.encoder_attention(q[1:9], k[1:9], v[1:9], np.array([0, 8]), 0.25)
    np.testing.assert_allclose(alone, ours[1:9], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from mistralcli import LLM

    return LLM(str(minilm_path), threads=2)


@pytest.fixture(scope="module")
def sentence_transformer(minilm_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    return sentence_transformers.SentenceTransformer(str(minilm_path), device="cpu")


def _vectors(outputs) -> np.ndarray:
    return np.array([o.outputs.embedding for o in outputs], dtype=np.float64)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm, sentence_transformer):
    ours = _vectors(minilm.embed(SENTENCES))
    theirs = sentence_transformer.encode(SENTENCES, convert_to_numpy=True).astype(np.float64)
    assert ours.shape == theirs.shape == (len(SENTENCES), 384)
    cosines = (ours * theirs).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosines.min() > 1 - 1e-4, cosines
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalised, as its modules say
    # one at a time: the same vectors as in one batch
    one_by_one = np.concatenate([_vectors(minilm.embed([s])) for s in SENTENCES[:4]])
    np.testing.assert_allclose(one_by_one, ours[:4], atol=1e-5)
    # the same tokens as its tokenizer
    assert [o.prompt_token_ids for o in minilm.embed(SENTENCES[:3])] == sentence_transformer.tokenizer(SENTENCES[:3])[
        "input_ids"
    ]


@pytest.mark.slow
def test_long_inputs_are_refused_or_truncated_as_sentence_transformers_does(minilm, sentence_transformer):
    long = " ".join(["The history of the world is long and full of surprises."] * 40)
    with pytest.raises(ValueError, match="at most 256"):
        minilm.embed([long])
    ours = _vectors(minilm.embed([long], truncate=True))
    assert len(minilm.embed([long], truncate=True)[0].prompt_token_ids) == 256
    theirs = sentence_transformer.encode([long]).astype(np.float64)
    assert float((ours * theirs).sum()) > 1 - 1e-4
    # token ids embed as their text does
    ids = minilm.embed(["The cat sits on the mat."])[0].prompt_token_ids
    np.testing.assert_allclose(
        _vectors(minilm.embed([ids])), _vectors(minilm.embed(["The cat sits on the mat."])), atol=1e-6
    )


@pytest.mark.slow
def test_an_embedding_model_does_not_generate_and_dimensions_need_matryoshka(minilm):
    from mistralcli.errors import MistralError

    with pytest.raises(MistralError, match="embedding model"):
        minilm.generate(["Hello"])
    with pytest.raises(ValueError, match="cannot be shortened"):
        minilm.embed(["Hello"], dimensions=128)
    with pytest.raises(ValueError, match="empty"):
        minilm.embed([[]])


@pytest.mark.slow
def test_a_matryoshka_model_s_shorter_vectors(minilm_path, tmp_path):
    import json
    import shutil

    from mistralcli import LLM

    copy = tmp_path / "minilm-matryoshka"
    shutil.copytree(minilm_path, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [384, 128, 64]}))
    llm = LLM(str(copy), threads=2)
    full = _vectors(llm.embed(SENTENCES[:3]))
    short = _vectors(llm.embed(SENTENCES[:3], dimensions=64))
    assert short.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-5)
    with pytest.raises(ValueError, match="1 to 384"):
        llm.embed(["x"], dimensions=500)


@pytest.mark.slow
def test_a_decoder_embeds_its_pooled_hidden_states_as_transformers_computes_them(smollm2_path, smollm2_hf):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from mistralcli import LLM
    from mistralcli.errors import MistralError

    with pytest.raises(MistralError, match="pooling="):
        LLM(str(smollm2_path), threads=2).embed(["Hello"])
    hf = transformers.AutoModel.from_pretrained(str(smollm2_hf), torch_dtype=torch.float32).eval()
    for pooling in ("mean", "last"):
        llm = LLM(str(smollm2_path), threads=2, pooling=pooling)
        outputs = llm.embed(SENTENCES[:4])
        for out in outputs:
            with torch.no_grad():
                hidden = hf(torch.tensor([out.prompt_token_ids])).last_hidden_state[0].double().numpy()
            expected = hidden.mean(axis=0) if pooling == "mean" else hidden[-1]
            expected /= np.linalg.norm(expected)
            cosine = float(np.dot(out.outputs.embedding, expected))
            assert cosine > 0.999, (pooling, cosine)
