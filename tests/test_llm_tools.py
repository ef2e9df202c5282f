"""The Python API's tools: `LLM(..., tool_callbacks=, agent_tools=, mcp_config=)` and chat's tool loop. Plain
functions become tools (schema from the signature); the loop, with scripted model outputs, runs every call
of a round, feeds the results back, batches conversations, stops at the round limit, hands the caller's own
tools back and counts every round in usage; MCP servers start with the LLM and are reaped by close(); and
Qwen2.5-Coder-0.5B calls a Python function for a file's line count."""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from tool_loop_server import HERMES_TEMPLATE, call

from mistralcli.engine.engine import RequestError
from mistralcli.errors import MistralError
from mistralcli.llm import LLM, CompletionOutput, RequestOutput
from mistralcli.sampling import SamplingParams
from mistralcli.tools.registry import function_tool
from mistralcli.tools.sandbox import SandboxConfig

TOOLBOX = str(Path(__file__).parent / "mcp_servers" / "toolbox.py")


def test_a_plain_function_is_a_tool_with_its_signature_as_schema():
    def forecast(city: str, days: int = 3, metric: bool = True) -> dict:
        """The weather forecast for a city."""
        return {"city": city, "days": days, "metric": metric}

    tool = function_tool(forecast)
    assert tool.name == "forecast" and tool.description == "The weather forecast for a city."
    assert tool.parameters["required"] == ["city"]
    assert tool.parameters["properties"]["days"] == {"type": "integer", "default": 3}
    assert tool.parameters["additionalProperties"] is False
    result = asyncio.run(tool.call({"city": "Lyon", "days": 2}))
    assert json.loads(result.text) == {"city": "Lyon", "days": 2, "metric": True} and not result.is_error
    assert asyncio.run(tool.call({"city": 3})).is_error

    async def shout(text):
        return text.upper()

    shouter = function_tool(shout, name="SHOUT")
    assert shouter.name == "SHOUT" and shouter.parameters["properties"] == {"text": {}}
    assert asyncio.run(shouter.call({"text": "hi"})).text == "HI"
    with pytest.raises(TypeError, match="a tool's parameters are named ones"):
        function_tool(lambda *args: None)


# ---- the loop with scripted outputs (SmolLM2 with a Hermes template; generate answers from a script)
@pytest.fixture
def llm(smollm2_path, tmp_path):
    from mistralcli.chat_template import ChatTemplate

    (tmp_path / "notes.txt").write_text("a\nb\nc\n")
    calls = []

    def add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append(("add", time.perf_counter()))
        time.sleep(0.3)
        return a + b

    def upper(text: str) -> str:
        """Upper-case a text."""
        calls.append(("upper", time.perf_counter()))
        time.sleep(0.3)
        return text.upper()

    model = LLM(
        str(smollm2_path),
        tool_callbacks={"add": add, "upper": upper},
        agent_tools=SandboxConfig(root=tmp_path),
        kv_cache_mb=64,
    )
    model.loaded.chat_template = ChatTemplate(HERMES_TEMPLATE)
    model.calls = calls
    yield model
    model.close()


def scripted(llm, script):
    """llm.generate answers script(prompt text) for each prompt; returns the prompts it was asked, by round."""
    rounds = []

    def generate(prompts, params):
        texts = [llm.tokenizer.decode(ids, skip_special=False) for ids in prompts]
        rounds.append((texts, params))
        outputs = []
        for i, (ids, text) in enumerate(zip(prompts, texts, strict=True)):
            answer = script(text)
            tokens = llm.tokenizer.encode(answer, add_special=False)
            completion = CompletionOutput(0, answer, tokens, "stop")
            outputs.append(RequestOutput(f"r{len(rounds)}-{i}", None, list(ids), [completion]))
        return outputs

    llm.generate = generate
    return rounds


def results(prompt: str) -> int:
    return prompt.count("<tool_response>")


def test_chat_runs_every_call_of_a_round_at_once_and_feeds_the_results_back(llm):
    def script(prompt):
        if results(prompt) == 0:
            return call("add", a=2, b=3) + call("upper", text="ok") + call("wc", path="notes.txt")
        return "2 + 3 = 5, OK, and the file has 3 lines."

    rounds = scripted(llm, script)
    [out] = llm.chat([{"role": "user", "content": "Go."}], SamplingParams(max_tokens=64))
    completion = out.outputs[0]
    assert completion.text == "2 + 3 = 5, OK, and the file has 3 lines." and completion.tool_calls is None
    assert [m["role"] for m in out.tool_messages] == ["assistant", "tool", "tool", "tool"]
    assert [m["content"] for m in out.tool_messages[1:]] == ["5", "OK", "3 3 6 notes.txt"]
    starts = sorted(t for _, t in llm.calls)
    assert starts[1] - starts[0] < 0.25  # the two slow functions ran at once
    second = rounds[1][0][0]
    assert "<tool_response>\n5\n</tool_response>" in second and "3 3 6 notes.txt" in second
    # the tools were offered (the template shows them), held to their parameters by a grammar
    assert '"name": "wc"' in rounds[0][0][0] and '"strict"' not in rounds[0][0][0]
    assert rounds[0][1][0].structured is not None and "add" in rounds[0][1][0].structured.grammar
    prompt_tokens = [len(llm.tokenizer.encode(p[0], add_special=False)) for p, _ in rounds]
    assert out.usage.prompt_tokens == pytest.approx(sum(prompt_tokens), abs=2)
    assert out.usage.completion_tokens == sum(
        len(llm.tokenizer.encode(script(p[0]), add_special=False)) for p, _ in rounds
    )


def test_conversations_go_round_by_round_in_one_batch(llm):
    def script(prompt):
        if "ALPHA" in prompt and results(prompt) < 2:
            return call("add", a=1, b=results(prompt))
        return "Done."

    rounds = scripted(llm, script)
    conversations = [[{"role": "user", "content": "ALPHA"}], [{"role": "user", "content": "BETA"}]]
    first, second = llm.chat(conversations)
    assert [len(texts) for texts, _ in rounds] == [2, 1, 1]
    assert [m["content"] for m in first.tool_messages if m["role"] == "tool"] == ["1", "2"]
    assert second.tool_messages == [] and second.outputs[0].text == "Done."


def test_the_round_limit_and_the_callers_own_tools_end_the_loop(llm):
    scripted(llm, lambda prompt: call("add", a=1, b=1))
    llm.max_tool_rounds = 2
    [out] = llm.chat([{"role": "user", "content": "Loop."}])
    assert out.outputs[0].finish_reason == "length"
    assert sum(m["role"] == "tool" for m in out.tool_messages) == 2
    own = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    rounds = scripted(llm, lambda prompt: call("add", a=1, b=1) + call("lookup", q="x"))
    [out] = llm.chat([{"role": "user", "content": "Mixed."}], tools=[own])
    assert [c["function"]["name"] for c in out.outputs[0].tool_calls] == ["lookup"]
    assert [m["content"] for m in out.tool_messages if m["role"] == "tool"] == ["2"]
    assert len(rounds) == 1


def test_mcp_servers_start_with_the_llm_and_close_reaps_them(smollm2_path):
    config = {"mcpServers": {"box": {"command": sys.executable, "args": [TOOLBOX, "stdio"]}}}
    model = LLM(str(smollm2_path), mcp_config=config, kv_cache_mb=16)
    try:
        assert {"add", "echo", "pid"} <= {t.name for t in model.tools.registry}
        assert [(s.id, s.ok) for s in model.tools.statuses] == [("box", True)]
        from mistralcli.tools.loop import ToolCall

        [added, pid] = model.tools.run([ToolCall("1", "add", '{"a": 2, "b": 2}'), ToolCall("2", "pid", "{}")])
        assert added.result.text == "4"
        pid = int(pid.result.text)
    finally:
        model.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    model.close()  # twice is harmless


def test_bad_tool_settings_are_clear_errors(smollm2_path, tmp_path):
    with pytest.raises(MistralError, match="mcp_config"):
        LLM(str(smollm2_path), mcp_config={"servers": "nope"})
    with pytest.raises(MistralError, match="no such MCP config file"):
        LLM(str(smollm2_path), mcp_config=tmp_path / "missing.json")
    with pytest.raises(ValueError, match="the Python API takes 'auto' or 'deny'"):
        LLM(str(smollm2_path), tool_callbacks={"f": lambda: 1}, agent_permission="ask")
    with pytest.raises(MistralError, match="two tools are named 'cat'"):
        LLM(str(smollm2_path), tool_callbacks={"cat": lambda: 1}, agent_tools=SandboxConfig(root=tmp_path))
    assert RequestError  # the engine's refusals stay RequestError (unchanged by tools)


@pytest.mark.slow
def test_qwen_calls_a_python_function_for_a_files_line_count(qwen_path, tmp_path):
    (tmp_path / "notes.txt").write_text("".join(f"line {i}\n" for i in range(7)))
    asked = []

    def line_count(path: str) -> int:
        """Count the lines of a text file."""
        asked.append(path)
        return (tmp_path / path).read_text().count("\n")

    with LLM(str(qwen_path), tool_callbacks={"line_count": line_count}, kv_cache_mb=64) as model:
        question = [{"role": "user", "content": "How many lines does the file notes.txt have?"}]
        [out] = model.chat(question, SamplingParams(temperature=0, max_tokens=48))
    # tolerant of what a 0.5B model says, strict about the plumbing: a call ran, its result was fed back
    assert asked and asked[0] == "notes.txt"
    assert out.tool_messages[0]["tool_calls"][0]["function"] == {
        "name": "line_count",
        "arguments": {"path": "notes.txt"},
    }
    assert out.tool_messages[1] == {
        "role": "tool",
        "tool_call_id": out.tool_messages[0]["tool_calls"][0]["id"],
        "name": "line_count",
        "content": "7",
    }
    assert out.usage.prompt_tokens > 2 * len(out.prompt_token_ids) - 200  # two rounds' prompts at least
