"""Embeddings through `mistral serve`: an embedding model (all-MiniLM-L6-v2) over /v1/embeddings with the openai
SDK (base64 by default, floats when asked) and over Ollama's /api/embed with its client, concurrent requests
sharing forwards, generation refused in each protocol's shape, malformed requests refused with nothing computed;
and a generating model that embeds too with --pooling (SmolLM2)."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from test_server import Server, client

pytestmark = pytest.mark.slow

SENTENCES = ["The cat sits on the mat.", "A dog plays in the park.", "Stocks fell sharply today.", "Bonjour !"]


@pytest.fixture(scope="module")
def server(minilm_path):
    s = Server(minilm_path)
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def reference(minilm_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(minilm_path), device="cpu")
    return model.encode(SENTENCES).astype(np.float64)


def test_openai_sdk_embeddings_match_sentence_transformers(server, reference):
    c = client(server)
    name = "all-MiniLM-L6-v2"
    assert [m.id for m in c.models.list().data] == [name]
    default = c.embeddings.create(model=name, input=SENTENCES)  # the SDK asks for base64 and decodes it
    floats = c.embeddings.create(model=name, input=SENTENCES, encoding_format="float")
    ours = np.array([d.embedding for d in floats.data])
    np.testing.assert_allclose(np.array([d.embedding for d in default.data]), ours, atol=1e-7)
    assert [d.index for d in floats.data] == [0, 1, 2, 3] and ours.shape == (4, 384)
    cosines = (ours * reference).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() > 1 - 1e-4
    tokens = httpx.post(server.url + "/tokenize", json={"prompt": SENTENCES[0]}).json()["tokens"]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 4 * 3
    by_ids = c.embeddings.create(model=name, input=[tokens], encoding_format="float")
    assert by_ids.usage.prompt_tokens == len(tokens)
    np.testing.assert_allclose(by_ids.data[0].embedding, ours[0], atol=1e-5)
    one = c.embeddings.create(model=name, input=SENTENCES[1], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, ours[1], atol=1e-5)


def test_concurrent_requests_all_get_their_own_vectors(server):
    def embed(text):
        r = httpx.post(server.url + "/v1/embeddings", json={"input": [text] * 3}, timeout=60)
        return np.array([d["embedding"] for d in r.json()["data"]])

    alone = [embed(s) for s in SENTENCES]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(embed, SENTENCES * 4))
    for i, vectors in enumerate(together):
        np.testing.assert_allclose(vectors, alone[i % 4], atol=1e-5)


def test_ollama_client_embeds(server, reference):
    import ollama

    c = ollama.Client(host=server.url)
    result = c.embed(model="all-MiniLM-L6-v2", input=SENTENCES)
    ours = np.array(result.embeddings)
    assert ours.shape == (4, 384) and result.prompt_eval_count > 12
    assert ((ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)).min() > 1 - 1e-4
    legacy = httpx.post(
        server.url + "/api/embeddings", json={"model": "all-MiniLM-L6-v2", "prompt": SENTENCES[0]}
    ).json()
    np.testing.assert_allclose(legacy["embedding"], ours[0], atol=1e-5)
    # Ollama truncates by default; asked not to, it refuses
    long = "word " * 600
    assert len(c.embed(model="all-MiniLM-L6-v2", input=long).embeddings[0]) == 384
    r = httpx.post(server.url + "/api/embed", json={"model": "all-MiniLM-L6-v2", "input": long, "truncate": False})
    assert r.status_code == 400 and "at most 256" in r.json()["error"]
    assert "embedding" in c.show("all-MiniLM-L6-v2").capabilities


def test_an_embedding_model_refuses_generation_in_each_protocol_s_shape(server):
    hi = [{"role": "user", "content": "hi"}]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/v1/chat/completions", json={"messages": hi})
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_generative"
        r = http.post("/v1/completions", json={"prompt": "hi"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_generative"
        r = http.post("/v1/responses", json={"input": "hi"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_generative"
        r = http.post("/v1/messages", json={"model": "all-MiniLM-L6-v2", "max_tokens": 5, "messages": hi})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = http.post("/api/chat", json={"model": "all-MiniLM-L6-v2", "messages": hi})
        assert r.status_code == 400 and "embeds" in r.json()["error"]
        assert http.get("/health").json() == {"status": "ok"} and http.get("/ready").json()["status"] == "ready"


MALFORMED = [
    ("/v1/embeddings", b"{bad", 400),
    ("/v1/embeddings", {}, 400),
    ("/v1/embeddings", {"input": []}, 400),
    ("/v1/embeddings", {"input": 5}, 400),
    ("/v1/embeddings", {"input": [[]]}, 400),
    ("/v1/embeddings", {"input": [-1]}, 400),
    ("/v1/embeddings", {"input": [10**8]}, 400),
    ("/v1/embeddings", {"input": ["ok", 3]}, 400),
    ("/v1/embeddings", {"input": "hi", "encoding_format": "hex"}, 400),
    ("/v1/embeddings", {"input": "hi", "dimensions": 0}, 400),
    ("/v1/embeddings", {"input": "hi", "dimensions": 128}, 400),  # not a Matryoshka model
    ("/v1/embeddings", {"input": "hi", "model": "text-embedding-3-small"}, 404),
    ("/v1/embeddings", {"input": "word " * 600}, 400),
    ("/api/embed", {"input": "hi"}, 400),
    ("/api/embed", {"model": "all-MiniLM-L6-v2", "input": []}, 400),
    ("/api/embed", {"model": "nomic-embed-text", "input": "hi"}, 404),
]


def embedded_inputs(http) -> float:
    line = next(x for x in http.get("/metrics").text.splitlines() if x.startswith("mistralcli_embedding_inputs_total"))
    return float(line.split()[1])


def test_malformed_embedding_requests_are_refused_in_their_protocol_s_shape(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        before = embedded_inputs(http)
        for path, body, status in MALFORMED:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = http.post(path, content=content)
            assert r.status_code == status, (path, body, r.text)
            error = r.json()["error"]
            if path.startswith("/v1"):
                assert set(error) == {"message", "type", "param", "code"} and error["message"], (path, body)
            else:
                assert isinstance(error, str) and error, (path, body)
        r = http.post("/v1/embeddings", json={"input": "hi", "dimensions": 128})
        assert r.json()["error"]["param"] == "dimensions"
        assert embedded_inputs(http) == before  # nothing was computed for them


def test_a_generating_model_embeds_with_pooling(smollm2_path):
    plain = Server(smollm2_path)
    try:
        r = httpx.post(plain.url + "/v1/embeddings", json={"input": "hi"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_embedding"
        assert "--pooling" in r.json()["error"]["message"]
    finally:
        assert plain.stop() == 0
    pooled = Server(smollm2_path, "--pooling", "last")
    try:
        c = client(pooled)
        vectors = c.embeddings.create(model="SmolLM2-135M-Instruct.Q4_1", input=SENTENCES[:2], encoding_format="float")
        assert len(vectors.data[0].embedding) == 576
        np.testing.assert_allclose(np.linalg.norm(vectors.data[0].embedding), 1.0, atol=1e-5)
        chat = c.chat.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert chat.choices[0].finish_reason in ("stop", "length")
    finally:
        assert pooled.stop() == 0


def test_a_bad_pooling_is_a_usage_error(smollm2_path):
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "mistralcli", "serve", "-m", str(smollm2_path), "--pooling", "max"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "'max'" in run.stderr
