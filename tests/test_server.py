"""`mistral serve` on a free port, driven by the openai SDK and by raw HTTP (httpx), with SmolLM2."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow

KEY = "sk-test-key"


class Server:
    def __init__(self, model_path, *args):
        env = {**os.environ, "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mistralcli",
                "serve",
                *(["-m", str(model_path)] if model_path is not None else []),
                "--port",
                "0",
                "--threads",
                "2",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {self.proc.stderr.read()}")
        self.stderr_lines = []
        threading.Thread(target=lambda: self.stderr_lines.extend(self.proc.stderr), daemon=True).start()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = Server(smollm2_path, "--max-num-seqs", "8")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def guarded(smollm2_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "requests.jsonl"
    s = Server(
        smollm2_path,
        "--api-key",
        KEY,
        "--rate-limit",
        "3:100000",
        "--cors",
        "https://app.example",
        "--log-requests",
        str(log),
    )
    s.log = log
    yield s
    assert s.stop() == 0


def client(server, **kw):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, **kw)


def blocks_in_use(server) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("mistralcli_kv_blocks_used{"):  # the one model's (a model label)
            return float(line.split()[-1])
    raise AssertionError("no mistralcli_kv_blocks_used in /metrics")


def wait_idle(server, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(server.url + "/ready").json()
        if ready["running"] == 0 and ready["waiting"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("requests still running")


def test_openai_sdk_chat_and_completion(server):
    c = client(server)
    models = c.models.list()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct.Q4_1"]
    chat = c.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        temperature=0,
        max_tokens=20,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert "Paris" in chat.choices[0].message.content
    assert chat.choices[0].finish_reason == "stop"
    assert (
        chat.usage.prompt_tokens > 10
        and chat.usage.completion_tokens == chat.usage.total_tokens - chat.usage.prompt_tokens
    )
    text = c.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        prompt="The capital of France is",
        max_tokens=5,
        temperature=0,
        echo=True,
        logprobs=2,
    )
    choice = text.choices[0]
    assert choice.text.startswith("The capital of France is") and choice.finish_reason == "length"
    assert len(choice.logprobs.tokens) == 5 and all(len(t) <= 2 for t in choice.logprobs.top_logprobs)
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    # text completions stop at 16 tokens unless told otherwise, as OpenAI's do
    default = c.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1", prompt="Once upon a time", extra_body={"ignore_eos": True}
    )
    assert default.usage.completion_tokens == 16 and default.choices[0].finish_reason == "length"


def test_openai_sdk_streaming_equals_non_streaming(server):
    c = client(server)
    messages = [{"role": "user", "content": "Name three colors."}]
    whole = c.chat.completions.create(
        model="x" if False else "SmolLM2-135M-Instruct.Q4_1", messages=messages, temperature=0, max_tokens=24
    )
    chunks = list(
        c.chat.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1",
            messages=messages,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == whole.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_async_sdk_concurrent_requests_are_batch_invariant(server):
    from openai import AsyncOpenAI

    prompts = [f"Count from {i} to {i + 5}." for i in range(6)]

    async def main():
        c = AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        kw = dict(model="SmolLM2-135M-Instruct.Q4_1", temperature=0, max_tokens=16)
        together = await asyncio.gather(
            *[c.chat.completions.create(messages=[{"role": "user", "content": p}], **kw) for p in prompts]
        )
        alone = [await c.chat.completions.create(messages=[{"role": "user", "content": p}], **kw) for p in prompts[:2]]
        return together, alone

    together, alone = asyncio.run(main())
    assert [r.choices[0].message.content for r in together[:2]] == [r.choices[0].message.content for r in alone]


def test_n_choices_seed_and_chat_logprobs(server):
    c = client(server)
    kw = dict(
        model="SmolLM2-135M-Instruct.Q4_1",
        messages=[{"role": "user", "content": "Tell me a word."}],
        temperature=1.0,
        max_tokens=8,
        seed=7,
    )
    # the prompt's blocks cached first, so that both requests below compute it alike: a prefill from the cache
    # differs from a fresh one in the last digits, enough to flip a draw now and then at temperature 1
    c.chat.completions.create(**{**kw, "max_tokens": 1})
    a = c.chat.completions.create(n=3, logprobs=True, top_logprobs=2, **kw)
    b = c.chat.completions.create(n=3, **kw)
    assert [ch.index for ch in a.choices] == [0, 1, 2]
    assert [ch.message.content for ch in a.choices] == [ch.message.content for ch in b.choices]
    entry = a.choices[0].logprobs.content[0]
    assert entry.logprob <= 0 and len(entry.top_logprobs) == 2 and bytes(entry.bytes).decode() == entry.token


MALFORMED = [
    ("POST", "/v1/chat/completions", b"{bad json", 400),
    ("POST", "/v1/chat/completions", b"[1, 2]", 400),
    ("POST", "/v1/chat/completions", b"", 400),
    ("POST", "/v1/chat/completions", {}, 400),
    ("POST", "/v1/chat/completions", {"messages": []}, 400),
    ("POST", "/v1/chat/completions", {"messages": "hi"}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"content": "hi"}]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 0}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 1000}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stop": [""]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stop": 7}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"x": 1}}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": 500}}, 400),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"99999999": 1}},
        400,
    ),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, 400),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 50},
        400,
    ),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 9}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "min_tokens": 9, "max_tokens": 2},
        400,
    ),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stop_token_ids": [10**7]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4"}, 404),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 9000}]}, 400),
    ("POST", "/v1/completions", {"prompt": ""}, 400),
    ("POST", "/v1/completions", {"prompt": []}, 400),
    ("POST", "/v1/completions", {"prompt": [-1]}, 400),
    ("POST", "/v1/completions", {"prompt": [10**8]}, 400),
    ("POST", "/v1/completions", {"prompt": {"a": 1}}, 400),
    ("POST", "/v1/completions", {"prompt": "hi", "logprobs": 99}, 400),
    ("POST", "/v1/completions", {"prompt": "hi", "suffix": "end"}, 400),
    ("POST", "/v1/completions", {"prompt": "hi", "model": "nope"}, 404),
    ("POST", "/tokenize", {}, 400),
    ("POST", "/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, 400),
    ("POST", "/detokenize", {"tokens": [10**8]}, 400),
    ("POST", "/detokenize", {"tokens": "abc"}, 400),
    ("POST", "/v1/chat/template", {"messages": []}, 400),
    ("GET", "/v1/models/other-model", None, 404),
    ("GET", "/v2/unknown", None, 404),
    ("PUT", "/v1/models", b"{}", 405),
    ("DELETE", "/v1/chat/completions", None, 405),
]


def test_malformed_requests_get_openai_errors_and_nothing_is_queued(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path, body, status in MALFORMED:
            content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            r = http.request(method, path, content=content)
            assert r.status_code == status, (method, path, body, r.text)
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], (path, body)
        # over the limit (read and dropped, then answered), chunked and over, or to an unknown route:
        # the same connection serves the next request
        for body in (b"{" + b" " * (5 << 20) + b"}", (b" " * (1 << 20) for _ in range(6))):
            r = http.post("/v1/chat/completions", content=body)
            assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
            assert http.post("/v2/nowhere", content=b" " * 4096).status_code == 404
        # announced far over (100 MiB): answered at once, before the body, and the connection closed
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as raw:
            raw.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 104857600\r\n\r\n" + b" " * 1024
            )
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
        assert json.loads(body)["error"]["code"] == "request_too_large"
        assert http.get("/health").json() == {"status": "ok"}
    assert blocks_in_use(server) == 0
    text = httpx.get(server.url + "/metrics").text
    assert 'mistralcli_http_requests_total{route="/v1/chat/completions",status="400"}' in text


def test_client_disconnect_mid_stream_frees_blocks(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        with http.stream(
            "POST",
            "/v1/completions",
            json={"prompt": "Once upon a time", "max_tokens": 2000, "stream": True, "ignore_eos": True},
        ) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["choices"][0]["text"] is not None
            assert httpx.get(server.url + "/ready").json()["running"] == 1
    wait_idle(server)
    assert blocks_in_use(server) == 0


def test_tokenize_detokenize_template_openapi(server):
    with httpx.Client(base_url=server.url) as http:
        tokens = http.post("/tokenize", json={"prompt": "Hello world", "add_special_tokens": False}).json()["tokens"]
        assert http.post("/detokenize", json={"tokens": tokens}).json()["prompt"] == "Hello world"
        messages = [{"role": "user", "content": "hi"}]
        template = http.post("/v1/chat/template", json={"messages": messages}).json()
        assert template["text"].endswith("<|im_start|>assistant\n")
        assert http.post("/tokenize", json={"messages": messages}).json()["tokens"] == template["tokens"]
        spec = http.get("/openapi.json").json()
        assert {"/v1/chat/completions", "/v1/completions", "/tokenize", "/metrics"} <= set(spec["paths"])
        assert "ChatCompletionRequest" in spec["components"]["schemas"]


def test_api_keys_rate_limits_cors_and_request_log(guarded):
    from openai import AuthenticationError, RateLimitError

    with pytest.raises(AuthenticationError):
        client(guarded, api_key="wrong").models.list()
    r = httpx.get(guarded.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(guarded.url + "/health").status_code == 200  # liveness needs no key
    c = client(guarded, api_key=KEY)
    kw = dict(model="SmolLM2-135M-Instruct.Q4_1", prompt="Hi", max_tokens=2)
    raw = c.completions.with_raw_response.create(**kw)
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    c.completions.create(**kw)
    c.completions.create(**kw)
    with pytest.raises(RateLimitError) as caught:
        c.completions.create(**kw)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.response.json()["error"]["type"] == "rate_limit_error"
    preflight = httpx.options(guarded.url + "/v1/chat/completions", headers={"Origin": "https://app.example"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.get(guarded.url + "/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    records = [json.loads(line) for line in guarded.log.read_text().splitlines()]
    done = [r for r in records if r["path"] == "/v1/completions" and r["status"] == 200]
    assert len(done) == 3 and done[0]["request"]["prompt"] == "Hi" and done[0]["usage"]["completion_tokens"] == 2


def test_graceful_shutdown_finishes_requests_in_flight(smollm2_path):
    s = Server(smollm2_path)
    result = {}

    def ask():
        result["r"] = httpx.post(
            s.url + "/v1/completions", json={"prompt": "Once", "max_tokens": 40, "ignore_eos": True}, timeout=60
        )

    t = threading.Thread(target=ask)
    t.start()
    deadline = time.monotonic() + 10
    while httpx.get(s.url + "/ready").json()["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.stop() == 0
    t.join()
    assert result["r"].status_code == 200 and result["r"].json()["usage"]["completion_tokens"] == 40


def sse_events(response) -> list:
    """The data of each server-sent event: a parsed JSON object, or the string "[DONE]"."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


N_CHOICES_CASES = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me a word."}]}, 3, 1),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Name a fruit."}]}, 2, 1),
    ("/v1/completions", {"prompt": "Once upon a time"}, 3, 1),
    ("/v1/completions", {"prompt": ["Once upon a time", "The sea was"]}, 2, 2),
]


@pytest.mark.parametrize("path,body,n,num_prompts", N_CHOICES_CASES)
def test_every_choice_gets_all_its_tokens_and_its_finish_reason(server, path, body, n, num_prompts):
    max_tokens = 8
    body = {**body, "n": n, "max_tokens": max_tokens, "temperature": 1.0, "seed": 11, "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        # the prompt cached first, so that both requests compute it alike (a prefill from the cache differs from a
        # fresh one in the last digits, which may flip a draw at temperature 1)
        assert http.post(path, json={**body, "n": 1, "max_tokens": 1}).status_code == 200
        whole = http.post(path, json=body).json()
        choices = whole["choices"]
        assert [c["index"] for c in choices] == list(range(n * num_prompts))
        assert [c["finish_reason"] for c in choices] == ["length"] * (n * num_prompts)
        assert whole["usage"]["completion_tokens"] == n * num_prompts * max_tokens

        with http.stream("POST", path, json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
            events = sse_events(r)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    texts, finish_reasons = {}, {}
    for event in events[:-1]:
        for c in event["choices"]:
            assert c["index"] not in finish_reasons, "a chunk after the choice's finish_reason"
            texts[c["index"]] = texts.get(c["index"], "") + (
                c["delta"].get("content") or "" if "delta" in c else c["text"]
            )
            if c["finish_reason"] is not None:
                finish_reasons[c["index"]] = c["finish_reason"]
    assert finish_reasons == {i: "length" for i in range(n * num_prompts)}
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == n * num_prompts * max_tokens
    expected = [c["message"]["content"] if "message" in c else c["text"] for c in choices]
    assert [texts[i] for i in range(n * num_prompts)] == expected


def test_shutdown_timeout_ends_open_streams_with_an_error_then_done_and_exits_0(smollm2_path):
    s = Server(smollm2_path, "--shutdown-timeout", "0.5")
    events = []
    opened = threading.Event()

    def stream():
        body = {"prompt": "Once", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
            opened.set()
            events.extend(sse_events(r))

    t = threading.Thread(target=stream)
    t.start()
    assert opened.wait(30)
    assert s.stop() == 0
    t.join(30)
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "shutting_down"
    assert set(events[-2]["error"]) == {"message", "type", "param", "code"}
