"""Anthropic's Messages API through `mistral serve`, driven by the anthropic SDK unmodified: create, stream,
count_tokens, stop sequences, a prefilled answer, errors in Anthropic's shape, x-api-key against the same keys and
rate limits (SmolLM2); a Claude-Code-style tool exchange lives in test_server_protocols_qwen.py."""

import json

import httpx
import pytest
from test_server import KEY, Server, blocks_in_use

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct.Q4_1"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"extra_body": {"temperature": 0}}  # recent SDKs no longer take temperature: sent as an extra field


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = Server(smollm2_path, "--max-num-seqs", "4")
    yield s
    assert s.stop() == 0


def anthropic_client(server, **kw):
    import anthropic

    return anthropic.Anthropic(base_url=server.url, api_key=kw.pop("api_key", "none"), max_retries=0, **kw)


def test_create_answers_in_content_blocks_with_usage(server):
    c = anthropic_client(server)
    message = c.messages.create(model=MODEL, max_tokens=30, system="Be brief.", messages=QUESTION, **GREEDY)
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["text"] and "Paris" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens > 10
    assert 0 < message.usage.output_tokens <= 30
    # the same conversation through chat completions gives the same text
    chat = httpx.post(
        server.url + "/v1/chat/completions",
        json={"messages": [{"role": "system", "content": "Be brief."}, *QUESTION], "temperature": 0, "max_tokens": 30},
        timeout=60,
    ).json()
    assert chat["choices"][0]["message"]["content"] == message.content[0].text


def test_stream_events_in_order_and_equal_to_the_whole_answer(server):
    c = anthropic_client(server)
    whole = c.messages.create(model=MODEL, max_tokens=24, messages=QUESTION, **GREEDY)
    with c.messages.stream(model=MODEL, max_tokens=24, messages=QUESTION, **GREEDY) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].text == whole.content[0].text and final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    # the raw events: message_start, ping, one text block, message_delta, message_stop
    with httpx.stream(
        "POST",
        server.url + "/v1/messages",
        json={"model": MODEL, "max_tokens": 24, "messages": QUESTION, "stream": True, "temperature": 0},
        timeout=60,
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        names, datas = [], []
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
            elif line.startswith("data: "):
                datas.append(json.loads(line[6:]))
    assert [d["type"] for d in datas] == names
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    text = "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta")
    assert text == whole.content[0].text and datas[-2]["delta"]["stop_reason"] == "end_turn"
    assert "content_block_delta" in types


def test_stop_sequences_max_tokens_and_a_prefilled_answer(server):
    c = anthropic_client(server)
    stopped = c.messages.create(model=MODEL, max_tokens=30, messages=QUESTION, stop_sequences=["Paris"], **GREEDY)
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "Paris"
    assert "Paris" not in stopped.content[0].text
    cut = c.messages.create(model=MODEL, max_tokens=3, messages=QUESTION, **GREEDY)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    # a last assistant message is the answer's beginning: the answer continues it (and does not repeat it)
    prefill = "The capital of France is"
    continued = c.messages.create(
        model=MODEL, max_tokens=8, messages=[*QUESTION, {"role": "assistant", "content": prefill}], **GREEDY
    )
    assert not continued.content[0].text.startswith(prefill) and "Paris" in continued.content[0].text


def test_count_tokens_counts_the_prompt_the_model_is_given(server):
    c = anthropic_client(server)
    counted = c.messages.count_tokens(model=MODEL, system="Be brief.", messages=QUESTION).input_tokens
    tokens = httpx.post(
        server.url + "/tokenize", json={"messages": [{"role": "system", "content": "Be brief."}, *QUESTION]}
    ).json()["count"]
    assert counted == tokens
    message = c.messages.create(model=MODEL, max_tokens=2, system="Be brief.", messages=QUESTION, **GREEDY)
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens == counted


HI = [{"role": "user", "content": "hi"}]
# malformed on both routes (given max_tokens on /v1/messages)
MALFORMED = [
    (b"{bad json", 400, "invalid_request_error"),
    (b"[]", 400, "invalid_request_error"),
    ({"messages": HI}, 400, "invalid_request_error"),  # the model is required
    ({"model": "claude-nope", "messages": HI}, 404, "not_found_error"),
    ({"model": MODEL, "messages": []}, 400, "invalid_request_error"),
    ({"model": MODEL, "messages": [{"role": "system", "content": "x"}]}, 400, "invalid_request_error"),
    (
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
        400,
        "invalid_request_error",
    ),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, 400, "invalid_request_error"),
    (
        {"model": MODEL, "messages": HI, "tools": [{"name": "f", "input_schema": {"type": 5}}]},
        400,
        "invalid_request_error",
    ),
    (
        {"model": MODEL, "messages": HI, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        400,
        "invalid_request_error",
    ),
    ({"model": MODEL, "messages": HI, "tool_choice": {"type": "any"}}, 400, "invalid_request_error"),
    ({"model": MODEL, "messages": HI, "tool_choice": {"type": "tool"}}, 400, "invalid_request_error"),
    ({"model": MODEL, "messages": HI, "thinking": {"type": "sometimes"}}, 400, "invalid_request_error"),
]
# malformed on /v1/messages only (count_tokens ignores the sampling fields)
MALFORMED_MESSAGES = [
    ({"model": MODEL, "messages": HI}, 400, "invalid_request_error"),  # max_tokens is required
    ({"model": MODEL, "max_tokens": 0, "messages": HI}, 400, "invalid_request_error"),
    ({"model": MODEL, "max_tokens": 10**9, "messages": HI}, 400, "invalid_request_error"),
    ({"model": MODEL, "max_tokens": 5, "messages": HI, "temperature": 1.5}, 400, "invalid_request_error"),
    ({"model": MODEL, "max_tokens": 5, "messages": HI, "stop_sequences": [""]}, 400, "invalid_request_error"),
    ({"model": MODEL, "max_tokens": 5, "messages": HI, "stream": "yes"}, 400, "invalid_request_error"),
]


def test_malformed_requests_get_anthropic_errors_and_nothing_is_queued(server):
    with_max_tokens = [({**b, "max_tokens": 5} if isinstance(b, dict) else b, st, k) for b, st, k in MALFORMED]
    cases = [("/v1/messages/count_tokens", *case) for case in MALFORMED]
    cases += [("/v1/messages", *case) for case in with_max_tokens + MALFORMED_MESSAGES]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path, body, status, kind in cases:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = http.post(path, content=content)
            assert r.status_code == status, (path, body, r.text)
            error = r.json()
            assert error["type"] == "error" and set(error["error"]) == {"type", "message"}, (path, body)
            assert error["error"]["type"] == kind and error["error"]["message"], (path, body)
        r = http.get("/v1/messages")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    assert blocks_in_use(server) == 0


def test_sdk_errors_are_typed(server):
    import anthropic

    c = anthropic_client(server)
    with pytest.raises(anthropic.NotFoundError) as caught:
        c.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
    assert MODEL in caught.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x " * 9000}])


@pytest.fixture(scope="module")
def guarded(smollm2_path):
    s = Server(smollm2_path, "--api-key", KEY, "--rate-limit", "2:100000")
    yield s
    assert s.stop() == 0


def test_x_api_key_against_the_same_keys_and_rate_limit(guarded):
    import anthropic

    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic_client(guarded, api_key="wrong").messages.create(model=MODEL, max_tokens=2, messages=HI)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": caught.value.body["error"]["message"]},
    }
    c = anthropic_client(guarded, api_key=KEY)  # sent as x-api-key
    assert c.messages.create(model=MODEL, max_tokens=2, messages=HI, **GREEDY).usage.output_tokens == 2
    # the key's second request of the minute, as a bearer token on the OpenAI route, counts against the same limit
    r = httpx.post(
        guarded.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"messages": HI, "max_tokens": 2},
        timeout=60,
    )
    assert r.status_code == 200
    with pytest.raises(anthropic.RateLimitError) as caught:
        c.messages.create(model=MODEL, max_tokens=2, messages=HI)
    assert caught.value.body["error"]["type"] == "rate_limit_error"
