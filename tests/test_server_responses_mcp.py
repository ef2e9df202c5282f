"""The Responses API's MCP tools named by a request ({"type": "mcp", "server_url", "allowed_tools", "headers"}):
the server connects to the MCP server (the toolbox over streamable HTTP), runs the allowed tools the model calls
in its tool loop, and answers with mcp_list_tools and mcp_call items before the message, whole and streamed; a
server not started with --allow-request-mcp refuses, as does a request that wants approvals (fail closed)."""

import json

import httpx
import pytest
from server_harness import InProcessServer, ScriptedEngine
from test_mcp import http_url  # noqa: F401  (the fixture)
from tool_loop_server import HERMES_TEMPLATE, call, tool_results

pytestmark = pytest.mark.slow


def add_then_answer(prompt: str) -> str:
    if tool_results(prompt) == 0:
        return call("add", a=2, b=3)
    return "The sum is 5."


def serve(loaded, request_mcp: bool) -> InProcessServer:
    from mistralcli.chat_template import ChatTemplate
    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.server.app import ServerSettings, make_app

    engine = Engine(loaded.model, loaded.tokenizer, loaded.context_length, EngineConfig(kv_cache_mb=64))
    settings = ServerSettings(
        model_name="smollm2",
        chat_template=ChatTemplate(HERMES_TEMPLATE),
        access_log=None,
        tool_call_parser="hermes",
        request_mcp=request_mcp,
    )
    return InProcessServer(make_app(ScriptedEngine(engine, add_then_answer, token_delay=0.001), settings))


@pytest.fixture(scope="module")
def server(smollm2):
    s = serve(smollm2, request_mcp=True)
    yield s
    s.stop(wait=10)


def mcp_tool(url: str, **fields) -> dict:
    return {"type": "mcp", "server_label": "toolbox", "server_url": url, "require_approval": "never", **fields}


def test_a_request_s_mcp_server_runs_its_allowed_tools(server, http_url):  # noqa: F811
    from openai import OpenAI

    c = OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    response = c.responses.create(
        model="smollm2", input="Add 2 and 3.", tools=[mcp_tool(http_url, allowed_tools=["add", "echo"])]
    )
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    listed, called, message = response.output
    assert sorted(t.name for t in listed.tools) == ["add", "echo"] and listed.server_label == "toolbox"
    assert called.name == "add" and json.loads(called.arguments) == {"a": 2, "b": 3} and called.output == "5"
    assert called.server_label == "toolbox" and response.output_text == "The sum is 5."
    # streamed: the same items, in order, each added then done
    with c.responses.stream(model="smollm2", input="Add 2 and 3.", tools=[mcp_tool(http_url)]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["mcp_list_tools", "mcp_call", "message"]
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["mcp_list_tools", "mcp_call", "message"] and final.output[1].output == "5"


def test_a_tool_not_allowed_is_not_offered(server, http_url):  # noqa: F811
    r = httpx.post(
        server.url + "/v1/responses",
        json={"input": "Add 2 and 3.", "tools": [mcp_tool(http_url, allowed_tools=["echo"])]},
        timeout=60,
    )
    body = r.json()
    assert [t["name"] for t in body["output"][0]["tools"]] == ["echo"]
    assert all(item["type"] != "mcp_call" for item in body["output"])  # the call to add is the client's to see


def test_fail_closed(server, smollm2, http_url):  # noqa: F811
    for tool, why in (
        ({"type": "mcp", "server_label": "toolbox", "server_url": http_url}, "approvals"),
        (mcp_tool("http://127.0.0.1:9/mcp"), "could not be used"),
        (mcp_tool("file:///etc/passwd"), "server_url"),
    ):
        r = httpx.post(server.url + "/v1/responses", json={"input": "Hi", "tools": [tool]}, timeout=60)
        assert r.status_code in (400, 424) and why in r.json()["error"]["message"], r.text
    closed = serve(smollm2, request_mcp=False)
    try:
        r = httpx.post(closed.url + "/v1/responses", json={"input": "Hi", "tools": [mcp_tool(http_url)]}, timeout=60)
        assert r.status_code == 400 and "--allow-request-mcp" in r.json()["error"]["message"]
    finally:
        closed.stop(wait=10)
