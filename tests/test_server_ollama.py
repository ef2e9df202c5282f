"""Ollama's API through `mistral serve`, driven by the ollama client unmodified: chat and generate, whole and
streamed as newline-delimited JSON (the default, as Ollama's), options and format, tags, show, ps, version, and
malformed requests in Ollama's error shape with nothing queued (SmolLM2). A tool round trip is in
test_server_protocols_qwen.py."""

import json

import httpx
import pytest
from test_server import Server, blocks_in_use

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct.Q4_1"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "num_predict": 20}


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = Server(smollm2_path, "--max-num-seqs", "4")
    yield s
    assert s.stop() == 0


def ollama_client(server):
    import ollama

    return ollama.Client(host=server.url)


def test_chat_whole_and_streamed_and_the_same_as_chat_completions(server):
    c = ollama_client(server)
    whole = c.chat(model=MODEL, messages=QUESTION, options=GREEDY)
    assert whole.done and whole.done_reason == "stop" and "Paris" in whole.message.content
    assert whole.message.role == "assistant" and whole.prompt_eval_count > 10 and 0 < whole.eval_count <= 20
    assert whole.total_duration >= whole.prompt_eval_duration + whole.eval_duration > 0
    parts = list(c.chat(model=MODEL, messages=QUESTION, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].done_reason == "stop"
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count
    chat = httpx.post(
        server.url + "/v1/chat/completions", json={"messages": QUESTION, "temperature": 0, "max_tokens": 20}, timeout=60
    ).json()
    assert chat["choices"][0]["message"]["content"] == whole.message.content
    # the model's name with its tag, as Ollama's clients write it
    assert c.chat(model=MODEL + ":latest", messages=QUESTION, options=GREEDY).message.content == whole.message.content


def test_streaming_is_newline_delimited_json_by_default(server):
    with httpx.stream(
        "POST", server.url + "/api/chat", json={"model": MODEL, "messages": QUESTION, "options": GREEDY}, timeout=60
    ) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) > 2 and [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]


def test_generate_templated_raw_and_its_options(server):
    c = ollama_client(server)
    answer = c.generate(model=MODEL, prompt="What is the capital of France?", options=GREEDY)
    assert "Paris" in answer.response and answer.done_reason == "stop" and answer.context
    streamed = "".join(
        p.response
        for p in c.generate(model=MODEL, prompt="What is the capital of France?", options=GREEDY, stream=True)
    )
    assert streamed == answer.response
    raw = c.generate(
        model=MODEL, prompt="The capital of France is", raw=True, options={"temperature": 0, "num_predict": 3}
    )
    assert raw.eval_count == 3 and raw.done_reason == "length" and raw.prompt_eval_count == 5
    # the same as a text completion of that prompt
    text = httpx.post(
        server.url + "/v1/completions", json={"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}
    ).json()
    assert raw.response == text["choices"][0]["text"]
    stopped = c.generate(
        model=MODEL, prompt="The capital of France is", raw=True, options={"temperature": 0, "stop": ["."]}
    )
    assert "." not in stopped.response
    # format: JSON, and a schema
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    shaped = c.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        format=schema,
        options={"temperature": 0, "num_predict": 40},
    )
    assert set(json.loads(shaped.message.content)) == {"city"}
    # an empty prompt loads the model, as Ollama's does
    assert c.generate(model=MODEL, prompt="").done_reason == "load"


def test_tags_show_ps_version(server):
    c = ollama_client(server)
    models = c.list().models
    assert [m.model for m in models] == [MODEL + ":latest"]
    details = models[0].details
    assert details.family == "llama" and details.quantization_level == "Q4_1" and details.parameter_size == "134.5M"
    assert models[0].size == 98362432 and len(models[0].digest) == 64
    shown = c.show(MODEL)
    assert shown.modelinfo["llama.context_length"] == 8192 and "<|im_start|>" in shown.template
    assert "completion" in shown.capabilities
    running = c.ps().models
    assert running[0].model == MODEL + ":latest" and running[0].context_length == 8192
    assert httpx.get(server.url + "/api/version").json()["version"]


MALFORMED = [
    ("/api/chat", b"{bad", 400),
    ("/api/chat", {"messages": QUESTION}, 400),  # the model is required
    ("/api/chat", {"model": "llama3.2", "messages": QUESTION}, 404),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, 400),
    ("/api/chat", {"model": MODEL, "messages": QUESTION, "options": {"temperature": "hot"}}, 400),
    ("/api/chat", {"model": MODEL, "messages": QUESTION, "options": {"num_predict": 0}}, 400),
    ("/api/chat", {"model": MODEL, "messages": QUESTION, "options": {"top_p": 5}}, 400),
    ("/api/chat", {"model": MODEL, "messages": QUESTION, "format": "yaml"}, 400),
    ("/api/chat", {"model": MODEL, "messages": QUESTION, "format": {"type": "nope"}}, 400),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "x " * 9000}]}, 400),
    ("/api/generate", {"model": MODEL, "prompt": "x", "suffix": "y"}, 400),
    ("/api/generate", {"model": MODEL, "prompt": "x", "template": "{{ .Prompt }}"}, 400),
    ("/api/generate", {"model": MODEL, "prompt": "x", "context": [10**8]}, 400),
    ("/api/generate", {"model": MODEL, "prompt": "x", "raw": "yes"}, 400),
    ("/api/generate", {"model": "nope", "prompt": "x"}, 404),
    ("/api/show", {}, 400),
    ("/api/show", {"model": "nope"}, 404),
]


def test_malformed_requests_get_ollama_errors_and_nothing_is_queued(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path, body, status in MALFORMED:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = http.post(path, content=content)
            assert r.status_code == status, (path, body, r.text)
            assert set(r.json()) == {"error"} and r.json()["error"], (path, body)
        assert http.get("/api/chat").status_code == 405
    assert blocks_in_use(server) == 0


def test_the_client_raises_its_error_type(server):
    import ollama

    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client(server).chat(model="llama3.2", messages=QUESTION)
    assert caught.value.status_code == 404 and MODEL in caught.value.error
