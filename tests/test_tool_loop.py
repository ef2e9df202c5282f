"""The server's tool loop end to end with scripted model outputs (SmolLM2's tokenizer, a short Hermes chat
template, as Qwen2.5's, answers written by the tests): every call of a round runs, at once (their timings overlap), every
result reaches the model's next prompt, the answer comes back whole or streamed with the loop's events (read
through the openai SDK), usage counts every round; the round limit, a client's tools beside the server's,
errors fed back, and the metrics (test_tool_approvals.py has the permissions)."""

import asyncio
import json
import time

import httpx
import openai
import pytest
from tool_loop_server import SLEEP_S, call, tool_results, two_calls_then_answer

pytestmark = pytest.mark.slow


def test_both_calls_of_a_round_run_at_once_and_both_results_reach_the_model(make_server):
    s = make_server(two_calls_then_answer)
    started = time.perf_counter()
    response = s.chat()
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    body = response.json()
    [choice] = body["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "The sum is 5 and the word is DONE."
    assert "tool_calls" not in choice["message"]
    # concurrency: each call sleeps SLEEP_S; the second started before the first ended
    spans = sorted(s.toolbox.spans, key=lambda span: span[1])
    assert [name for name, _, _ in spans] == ["slow_add", "slow_upper"] or len(spans) == 2
    assert max(start for _, start, _ in spans) < min(end for _, _, end in spans)
    assert elapsed < 2 * SLEEP_S + 1.0
    # the second prompt holds both results, after the assistant's turn
    assert len(s.engine.asked) == 2
    second_prompt = s.engine.asked[1][0]
    assert tool_results(second_prompt) == 2
    assert "<tool_response>\n5\n</tool_response>" in second_prompt
    assert "<tool_response>\nDONE\n</tool_response>" in second_prompt
    # and the assistant's calls, with their arguments, before them
    assert '{"name": "slow_add", "arguments": {"a": 2, "b": 3}}' in second_prompt
    # the loop's record: one round, the calls and their results in OpenAI's message shape
    loop = choice["tool_loop"]
    assert loop["rounds"] == 1 and "stopped_by" not in loop
    assistant, *results = loop["messages"]
    assert assistant["role"] == "assistant" and assistant["content"] == "Let me compute."
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["slow_add", "slow_upper"]
    assert [(m["role"], m["content"]) for m in results] == [("tool", "5"), ("tool", "DONE")]
    assert [m["tool_call_id"] for m in results] == [c["id"] for c in assistant["tool_calls"]]
    # usage counts both rounds
    tokenizer = s.engine.tokenizer
    prompts = [len(tokenizer.encode(p, add_special=False)) for p, _ in s.engine.asked]
    usage = body["usage"]
    assert usage["prompt_tokens"] == pytest.approx(sum(prompts), abs=2)
    answers = [two_calls_then_answer(p) for p, _ in s.engine.asked]
    assert usage["completion_tokens"] == sum(len(tokenizer.encode(a, add_special=False)) for a in answers)


def test_the_stream_shows_each_call_and_result_then_the_answer_through_the_openai_sdk(make_server):
    s = make_server(two_calls_then_answer)
    client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="none")
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Go."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, events, finish, usage = "", [], [], None
    for chunk in stream:
        extra = chunk.model_extra or {}
        if extra.get("tool_event"):
            events.append(extra["tool_event"])
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            assert not choice.delta.tool_calls  # the server's calls are events, not calls for the client
            content += choice.delta.content or ""
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert content == "Let me compute.The sum is 5 and the word is DONE."
    assert finish == ["stop"]
    kinds = [(e["type"], e["name"]) for e in events]
    assert sorted(kinds[:2]) == [("tool_call", "slow_add"), ("tool_call", "slow_upper")]
    assert sorted(kinds[2:]) == [("tool_result", "slow_add"), ("tool_result", "slow_upper")]
    results = {e["name"]: e for e in events if e["type"] == "tool_result"}
    assert results["slow_add"]["content"] == "5" and results["slow_add"]["outcome"] == "ok"
    assert results["slow_add"]["duration_s"] >= SLEEP_S * 0.9
    assert all(e["round"] == 1 for e in events)
    calls = {e["name"]: e for e in events if e["type"] == "tool_call"}
    assert json.loads(calls["slow_add"]["arguments"]) == {"a": 2, "b": 3}
    assert usage is not None and usage.completion_tokens > 0


def test_the_round_limit_stops_a_model_that_never_answers(make_server):
    s = make_server(lambda prompt: call("slow_add", a=1, b=tool_results(prompt)), max_rounds=2)
    for response in (s.chat(), s.chat()):  # non-streamed, twice (no state leaks between requests)
        assert response.status_code == 200, response.text
        [choice] = response.json()["choices"]
        assert choice["finish_reason"] == "length"
        loop = choice["tool_loop"]
        assert loop["rounds"] == 2 and loop["stopped_by"] == "max_tool_rounds"
        assert [c["function"]["name"] for c in loop["unrun_tool_calls"]] == ["slow_add"]
        assert "tool_calls" not in choice["message"]
    assert len(s.engine.asked) == 6 and len(s.toolbox.spans) == 4
    chunks = s.events()
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["length"]
    results = [c["tool_event"] for c in chunks if c.get("tool_event", {}).get("type") == "tool_result"]
    assert [e["round"] for e in results] == [1, 2]


CLIENT_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def test_a_clients_tool_goes_back_to_it_while_the_servers_runs(make_server):
    s = make_server(lambda prompt: call("slow_add", a=1, b=1) + call("get_weather", city="Lyon"))
    response = s.chat(tools=[CLIENT_TOOL])
    [choice] = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    [client_call] = choice["message"]["tool_calls"]
    assert client_call["function"]["name"] == "get_weather"
    assert json.loads(client_call["function"]["arguments"]) == {"city": "Lyon"}
    loop = choice["tool_loop"]
    assert loop["rounds"] == 1 and loop["messages"][1]["content"] == "2"
    assert len(s.engine.asked) == 1 and len(s.toolbox.spans) == 1
    # the model was shown both the client's tool and the server's
    assert "get_weather" in s.engine.asked[0][0] and "slow_upper" in s.engine.asked[0][0]
    # streamed: the client's call is its only delta.tool_calls, numbered 0, and the server's result comes first
    chunks = s.events(tools=[CLIENT_TOOL])
    deltas = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas and all(d["index"] == 0 for d in deltas)
    assert deltas[0]["function"]["name"] == "get_weather"
    kinds = [c["tool_event"]["type"] if "tool_event" in c else c["choices"][0]["finish_reason"] for c in chunks]
    kinds = [k for k in kinds if k]
    assert kinds == ["tool_call", "tool_result", "tool_calls"]


def test_tool_choice_none_offers_no_server_tools_and_n_above_one_is_refused(make_server):
    s = make_server(lambda prompt: "Hello.")
    response = s.chat(tool_choice="none")
    assert response.status_code == 200 and "tool_loop" not in response.json()["choices"][0]
    assert "slow_add" not in s.engine.asked[-1][0]
    response = s.chat()
    assert "slow_add" in s.engine.asked[-1][0] and "tool_loop" not in response.json()["choices"][0]
    response = s.chat(n=2)
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


def test_a_forced_call_is_forced_in_the_first_round_only(make_server):
    s = make_server(two_calls_then_answer)
    response = s.chat(tool_choice="required")
    assert response.json()["choices"][0]["message"]["content"] == "The sum is 5 and the word is DONE."
    first, second = (params.structured.grammar for _, params in s.engine.asked)
    assert first.startswith("%llguidance {}\nstart: call")  # nothing but calls
    assert second.startswith("%llguidance {}\nstart: bare | first_call call* TEXT | FIRST")  # text, or strict calls
    # with its own constraint, the request's shape holds, and the server's tools are not strict
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    s.chat(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert s.engine.asked[-1][1].structured.json == schema


def test_a_tools_failure_is_fed_back_to_the_model_and_counted(make_server):
    s = make_server(lambda prompt: call("broken") if tool_results(prompt) == 0 else "Sorry.")
    response = s.chat()
    [choice] = response.json()["choices"]
    assert choice["message"]["content"] == "Sorry." and choice["finish_reason"] == "stop"
    [_, result] = choice["tool_loop"]["messages"]
    assert result["content"] == "broken failed: the disk is on fire"
    assert "<tool_response>\nbroken failed: the disk is on fire\n</tool_response>" in s.engine.asked[1][0]
    metrics = httpx.get(f"{s.url}/metrics").text
    assert 'mistralcli_tool_calls_total{outcome="error",tool="broken"} 1.0' in metrics
    assert "mistralcli_tool_rounds_total 1.0" in metrics
    assert 'mistralcli_tool_call_duration_seconds_count{tool="broken"} 1.0' in metrics


def test_a_call_that_cannot_be_parsed_ends_the_loop_and_is_reported(make_server):
    # the second call's arguments violate slow_add's schema: the parser reports it; the first call still runs
    s = make_server(lambda prompt: call("slow_add", a=1, b=2) + call("slow_add", a="two", b=3))
    response = s.chat()
    [choice] = response.json()["choices"]
    assert choice["finish_reason"] == "stop"
    assert "'two' is not of type 'number'" in choice["tool_call_parse_error"]["message"]
    assert choice["tool_loop"]["rounds"] == 1 and choice["tool_loop"]["messages"][1]["content"] == "3"
    assert len(s.engine.asked) == 1 and len(s.toolbox.spans) == 1


# ---- a real model through `mistral serve`: Qwen2.5-Coder-0.5B with the agent tools and an MCP server's
def test_qwen_asks_a_real_agent_tool_for_a_files_line_count(qwen_path, tmp_path):
    import sys
    from pathlib import Path

    from test_server import Server

    (tmp_path / "notes.txt").write_text("".join(f"line {i}\n" for i in range(1, 8)))
    config = tmp_path / "mcp.json"
    toolbox = str(Path(__file__).parent / "mcp_servers" / "toolbox.py")
    config.write_text(json.dumps({"mcpServers": {"box": {"command": sys.executable, "args": [toolbox, "stdio"]}}}))
    s = Server(qwen_path, "--enable-agent-tools", "--agent-sandbox-root", str(tmp_path), "--mcp-config", str(config))
    try:
        question = [{"role": "user", "content": "How many lines does the file notes.txt have?"}]
        body = {
            "messages": question,
            "temperature": 0,
            "max_tokens": 48,
            "tool_choice": {"type": "function", "function": {"name": "wc"}},
        }
        response = httpx.post(f"{s.url}/v1/chat/completions", json=body, timeout=300)
        assert response.status_code == 200, response.text
        [choice] = response.json()["choices"]
        loop = choice["tool_loop"]
        assert loop["rounds"] >= 1
        call, result = loop["messages"][0]["tool_calls"][0], loop["messages"][1]
        assert call["function"]["name"] == "wc" and result["tool_call_id"] == call["id"]
        # whatever path the model chose, the result is the tool's own answer for it
        from mistralcli.tools.agent_tools import agent_tools
        from mistralcli.tools.registry import ToolRegistry
        from mistralcli.tools.sandbox import SandboxConfig

        registry = ToolRegistry()
        for tool in agent_tools(SandboxConfig(root=tmp_path)):
            registry.add(tool)
        expected = asyncio.run(registry.call("wc", call["function"]["arguments"]))
        assert result["content"] == expected.text
        if call["function"]["arguments"] == {"path": "notes.txt"}:
            assert result["content"] == "7 14 49 notes.txt"
        assert choice["finish_reason"] in ("stop", "length")
        assert response.json()["usage"]["prompt_tokens"] > 2 * 1000  # two rounds' prompts, each with the tools
        # the MCP server's tool, streamed: the call and its result arrive as events, then the answer
        body = {
            "messages": [{"role": "user", "content": "What is 2 + 3? Use the add tool."}],
            "temperature": 0,
            "max_tokens": 32,
            "stream": True,
            "tool_choice": {"type": "function", "function": {"name": "add"}},
        }
        events = []
        with httpx.stream("POST", f"{s.url}/v1/chat/completions", json=body, timeout=300) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]).get("tool_event"))
        events = [e for e in events if e]
        assert [e["type"] for e in events[:2]] == ["tool_call", "tool_result"]
        assert events[0]["name"] == "add" and events[1]["outcome"] == "ok"
        args = json.loads(events[0]["arguments"])
        assert events[1]["content"] == str(args["a"] + args["b"])
        metrics = httpx.get(f"{s.url}/metrics").text
        assert 'mistralcli_tool_calls_total{outcome="ok",tool="wc"}' in metrics
        assert 'mistralcli_tool_calls_total{outcome="ok",tool="add"}' in metrics
    finally:
        assert s.stop() == 0
    assert any("MCP server box:" in line for line in s.stderr_lines)
