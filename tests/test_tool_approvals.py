"""The server's permissions for dangerous tools, end to end with scripted model outputs (test_tool_loop.py's
server): ask waits for POST /v1/agent/approvals/{id} and runs or refuses the call, a timeout denies it,
deny never runs it (safe tools still do), and the approvals' routes answer in OpenAI's error shape."""

import json
import threading

import httpx
import pytest
from server_harness import InProcessServer
from tool_loop_server import LoopServer, call, tool_results, two_calls_then_answer

pytestmark = pytest.mark.slow


def write_then_answer(prompt: str) -> str:
    return call("write_note", text="hello") if tool_results(prompt) == 0 else "Done."


def _stream_with_decisions(s: LoopServer, decide) -> list[dict]:
    """Stream a request; on each approval_required event, decide(approval_id) in a thread (as a person would)."""
    chunks = []
    body = {"messages": [{"role": "user", "content": "Note it."}], "stream": True}
    with httpx.stream("POST", f"{s.url}/v1/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            chunks.append(chunk)
            event = chunk.get("tool_event") or {}
            if event.get("type") == "approval_required":
                threading.Thread(target=decide, args=(event["approval_id"],)).start()
    return [c["tool_event"] for c in chunks if "tool_event" in c]


def test_ask_waits_for_an_approval_and_runs_or_refuses_the_call(make_server):
    s = make_server(write_then_answer, permission="ask")

    def approve(approval_id):
        pending = httpx.get(f"{s.url}/v1/agent/approvals").json()
        assert pending["permission"] == "ask" and [a["id"] for a in pending["data"]] == [approval_id]
        assert pending["data"][0]["name"] == "write_note"
        response = httpx.post(f"{s.url}/v1/agent/approvals/{approval_id}", json={"approved": True})
        assert response.status_code == 200 and response.json()["approved"] is True

    events = _stream_with_decisions(s, approve)
    assert [e["type"] for e in events] == ["tool_call", "approval_required", "approval", "tool_result"]
    assert events[2]["decision"] == "approved" and events[3]["outcome"] == "ok"
    assert s.toolbox.notes == ["hello"]

    def deny(approval_id):
        httpx.post(f"{s.url}/v1/agent/approvals/{approval_id}", json={"approved": False})

    events = _stream_with_decisions(s, deny)
    assert events[2]["decision"] == "denied" and events[3]["outcome"] == "denied"
    assert "not run: the call was denied" in events[3]["content"]
    assert s.toolbox.notes == ["hello"]
    # decided, unknown and malformed decisions
    assert httpx.post(f"{s.url}/v1/agent/approvals/appr_nope", json={"approved": True}).status_code == 404
    bad = httpx.post(f"{s.url}/v1/agent/approvals/appr_nope", json={"approved": "yes"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "approved"


def test_ask_denies_when_no_approval_comes_in_time_and_deny_never_runs(make_server):
    s = make_server(write_then_answer, permission="ask", approval_timeout=0.5)
    response = s.chat()
    [choice] = response.json()["choices"]
    [_, result] = choice["tool_loop"]["messages"]
    assert "no approval came within 0.5 s" in result["content"]
    assert httpx.get(f"{s.url}/v1/agent/approvals").json()["data"] == []
    s = make_server(write_then_answer, permission="deny")
    events = s.events()
    results = [c["tool_event"] for c in events if c.get("tool_event", {}).get("type") == "tool_result"]
    assert [e["outcome"] for e in results] == ["denied"] and not s.toolbox.notes
    # safe tools run under deny
    s = make_server(two_calls_then_answer, permission="deny")
    assert s.chat().json()["choices"][0]["message"]["content"].startswith("The sum is 5")


def test_approvals_need_a_server_with_tools(smollm2):
    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.server.app import ServerSettings, make_app

    engine = Engine(smollm2.model, smollm2.tokenizer, smollm2.context_length, EngineConfig(kv_cache_mb=16))
    server = InProcessServer(make_app(engine, ServerSettings(model_name="m", access_log=None)))
    try:
        response = httpx.get(f"{server.url}/v1/agent/approvals")
        assert response.status_code == 404 and "runs no tools" in response.json()["error"]["message"]
    finally:
        server.stop(wait=10)
