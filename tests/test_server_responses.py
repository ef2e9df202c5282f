"""OpenAI's Responses API through `mistral serve`, driven by the openai SDK unmodified: create, stream (the typed
events in order, with sequence numbers), retrieve, parse (structured output), input_items, delete,
previous_response_id (across a server restart too), background responses and their cancel, --responses-ttl,
and malformed requests in OpenAI's error shape with nothing queued (SmolLM2). The function-tool round trip is in
test_server_protocols_qwen.py."""

import json
import subprocess
import sys
import time

import httpx
import pytest
from pydantic import BaseModel
from test_server import Server, blocks_in_use, client

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return tmp_path_factory.mktemp("responses") / "responses.sqlite3"


@pytest.fixture(scope="module")
def server(smollm2_path, store_path):
    s = Server(smollm2_path, "--max-num-seqs", "4", "--responses-db", str(store_path))
    yield s
    assert s.stop() == 0


def test_create_retrieve_and_the_same_text_as_chat_completions(server):
    c = client(server)
    response = c.responses.create(
        model=MODEL,
        input="What is the capital of France?",
        instructions="Be brief.",
        temperature=0,
        max_output_tokens=30,
    )
    assert response.object == "response" and response.id.startswith("resp_") and response.status == "completed"
    assert [item.type for item in response.output] == ["message"] and "Paris" in response.output_text
    assert response.usage.input_tokens > 10 and 0 < response.usage.output_tokens <= 30
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.instructions == "Be brief." and response.store is True
    chat = c.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=30,
    )
    assert response.output_text == chat.choices[0].message.content
    again = c.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.status == "completed"
    items = c.responses.input_items.list(response.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text.startswith("What is")
    # cut at max_output_tokens: incomplete, and says why
    cut = c.responses.create(model=MODEL, input="Tell me a story.", max_output_tokens=4)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


def test_previous_response_id_continues_the_conversation(server):
    c = client(server)
    first = c.responses.create(model=MODEL, input="What is the capital of France?", temperature=0, max_output_tokens=20)
    second = c.responses.create(
        model=MODEL, input="And of Germany?", previous_response_id=first.id, temperature=0, max_output_tokens=20
    )
    assert "Berlin" in second.output_text and second.previous_response_id == first.id
    # the prompt was the whole conversation: the same as chat completions given it
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And of Germany?"},
    ]
    tokens = httpx.post(server.url + "/tokenize", json={"messages": messages}).json()["count"]
    assert second.usage.input_tokens == tokens
    # not stored: not retrievable, and not a conversation to continue
    unstored = c.responses.create(model=MODEL, input="Hi", store=False, max_output_tokens=2)
    import openai

    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as caught:
        c.responses.create(model=MODEL, input="Hi", previous_response_id=unstored.id)
    assert caught.value.body["param"] == "previous_response_id"


def test_stream_events_are_typed_ordered_and_equal_to_the_whole_answer(server):
    c = client(server)
    kw = dict(model=MODEL, input="Name three colors.", temperature=0, max_output_tokens=24)
    whole = c.responses.create(**kw)
    with c.responses.stream(**kw) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.output_text == whole.output_text and final.status == whole.status
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    # stored as it streamed
    assert c.responses.retrieve(final.id).output_text == whole.output_text


class City(BaseModel):
    name: str
    country: str


def test_parse_gives_the_schema_s_object(server):
    c = client(server)
    parsed = c.responses.parse(
        model=MODEL, input="Give the capital of France as JSON.", text_format=City, temperature=0, max_output_tokens=60
    )
    assert isinstance(parsed.output_parsed, City) and parsed.output_parsed.name
    assert json.loads(parsed.output_text) == parsed.output_parsed.model_dump()


def test_background_responses_are_retrieved_and_cancelled(server):
    c = client(server)
    done = c.responses.create(model=MODEL, input="Say hi.", background=True, max_output_tokens=8, temperature=0)
    assert done.status == "queued" and done.background is True
    deadline = time.monotonic() + 60
    while (got := c.responses.retrieve(done.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert got.status in ("completed", "incomplete") and got.output_text
    long = c.responses.create(
        model=MODEL,
        input="Tell a long story.",
        background=True,
        max_output_tokens=2000,
        extra_body={"ignore_eos": True},
    )
    time.sleep(0.5)
    cancelled = c.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    assert c.responses.retrieve(long.id).status == "cancelled"
    time.sleep(0.2)
    assert httpx.get(server.url + "/ready").json()["running"] == 0 and blocks_in_use(server) == 0
    # only a background response can be cancelled
    plain = c.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    r = httpx.post(f"{server.url}/v1/responses/{plain.id}/cancel")
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_id"


def test_delete_and_input_items_paging(server):
    c = client(server)
    items = [
        {"role": "user", "content": "One."},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": [{"type": "input_text", "text": "Three."}]},
    ]
    response = c.responses.create(model=MODEL, input=items, max_output_tokens=2)
    listed = c.responses.input_items.list(response.id, order="asc")
    assert [i.content[0].text for i in listed.data] == ["One.", "Two.", "Three."]
    newest = c.responses.input_items.list(response.id, limit=2)
    assert [i.content[0].text for i in newest.data] == ["Three.", "Two."] and newest.has_more
    rest = c.responses.input_items.list(response.id, limit=2, after=newest.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["One."] and not rest.has_more
    r = httpx.delete(f"{server.url}/v1/responses/{response.id}")
    assert r.json() == {"id": response.id, "object": "response", "deleted": True}
    assert httpx.get(f"{server.url}/v1/responses/{response.id}").status_code == 404
    assert httpx.delete(f"{server.url}/v1/responses/{response.id}").status_code == 404


HI = "hi"
MALFORMED = [
    ("POST", "/v1/responses", b"{bad", 400),
    ("POST", "/v1/responses", {}, 400),
    ("POST", "/v1/responses", {"input": []}, 400),
    ("POST", "/v1/responses", {"input": 5}, 400),
    ("POST", "/v1/responses", {"input": [{"type": "message", "role": "wizard", "content": "x"}]}, 400),
    (
        "POST",
        "/v1/responses",
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
        400,
    ),
    (
        "POST",
        "/v1/responses",
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
        400,
    ),
    ("POST", "/v1/responses", {"input": [{"type": "teleport"}]}, 400),
    ("POST", "/v1/responses", {"input": HI, "model": "gpt-5"}, 404),
    ("POST", "/v1/responses", {"input": HI, "temperature": 3}, 400),
    ("POST", "/v1/responses", {"input": HI, "max_output_tokens": 0}, 400),
    ("POST", "/v1/responses", {"input": HI, "max_output_tokens": 10**9}, 400),
    ("POST", "/v1/responses", {"input": HI, "background": True, "store": False}, 400),
    ("POST", "/v1/responses", {"input": HI, "previous_response_id": "resp_nope"}, 404),
    ("POST", "/v1/responses", {"input": HI, "tools": [{"type": "web_search"}]}, 400),
    (
        "POST",
        "/v1/responses",
        {"input": HI, "tools": [{"type": "function", "name": "f", "parameters": {"type": 3}}]},
        400,
    ),
    ("POST", "/v1/responses", {"input": HI, "tool_choice": "required"}, 400),
    ("POST", "/v1/responses", {"input": HI, "tool_choice": {"type": "file_search"}}, 400),
    ("POST", "/v1/responses", {"input": HI, "text": {"format": {"type": "json_schema"}}}, 400),
    (
        "POST",
        "/v1/responses",
        {"input": HI, "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}}},
        400,
    ),
    ("POST", "/v1/responses", {"input": HI, "reasoning": {"effort": "extreme"}}, 400),
    ("POST", "/v1/responses", {"input": HI, "metadata": {str(i): "v" for i in range(17)}}, 400),
    ("POST", "/v1/responses", {"input": "x " * 9000}, 400),
    ("GET", "/v1/responses/resp_nope", None, 404),
    ("GET", "/v1/responses/resp_nope/input_items", None, 404),
    ("DELETE", "/v1/responses/resp_nope", None, 404),
    ("POST", "/v1/responses/resp_nope/cancel", None, 404),
    ("PUT", "/v1/responses", b"{}", 405),
]


def test_malformed_requests_get_openai_errors_and_nothing_is_queued(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path, body, status in MALFORMED:
            content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            r = http.request(method, path, content=content)
            assert r.status_code == status, (method, path, body, r.text)
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], (path, body)
        # the too-long prompt and the schema are named by the Responses API's fields
        r = http.post("/v1/responses", json={"input": HI, "max_output_tokens": 10**9})
        assert r.json()["error"]["param"] == "max_output_tokens" and "max_output_tokens" in r.json()["error"]["message"]
        bad_schema = {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}
        r = http.post("/v1/responses", json={"input": HI, "text": {"format": bad_schema}})
        assert r.json()["error"]["param"] == "text.format", r.text
    assert blocks_in_use(server) == 0


def test_a_conversation_goes_on_across_a_server_restart(smollm2_path, tmp_path):
    store = tmp_path / "responses.sqlite3"
    first_server = Server(smollm2_path, "--responses-db", str(store))
    try:
        first = client(first_server).responses.create(
            model=MODEL, input="What is the capital of France?", temperature=0, max_output_tokens=20
        )
    finally:
        assert first_server.stop() == 0
    second_server = Server(smollm2_path, "--responses-db", str(store))
    try:
        c = client(second_server)
        assert c.responses.retrieve(first.id).output_text == first.output_text
        second = c.responses.create(
            model=MODEL, input="And of Germany?", previous_response_id=first.id, temperature=0, max_output_tokens=20
        )
        assert "Berlin" in second.output_text
    finally:
        assert second_server.stop() == 0


def test_responses_ttl_expires_old_responses(smollm2_path, tmp_path):
    from mistralcli.server.response_store import ResponseStore, parse_ttl

    assert parse_ttl("30d") == 30 * 86400 and parse_ttl("90m") == 5400 and parse_ttl("never") is None
    for bad in ("soon", "0", "-5m", "3w"):
        with pytest.raises(ValueError):
            parse_ttl(bad)
    path = tmp_path / "r.sqlite3"
    with ResponseStore(path, ttl_s=None) as store:
        store.put("resp_old", {"id": "resp_old"}, [], [])
        store.db.execute("UPDATE responses SET created = created - 7200 WHERE id = 'resp_old'")
        store.put("resp_new", {"id": "resp_new"}, [], [])
    with ResponseStore(path, ttl_s=3600) as store:  # opening expires
        assert store.get("resp_old") is None and store.get("resp_new").body == {"id": "resp_new"}
        assert store.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1
    # a bad --responses-ttl is a usage error that quotes the value
    run = subprocess.run(
        [sys.executable, "-m", "mistralcli", "serve", "-m", str(smollm2_path), "--responses-ttl", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "'soon'" in run.stderr
