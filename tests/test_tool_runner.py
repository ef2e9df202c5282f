"""The tool loop's runner on its own: every call of a round at once, each answered (never raised) whether it
ran, failed, named no tool, had bad arguments or was refused; the permissions and the approvals; the events
and the metrics hook; and the round's messages in the shape chat templates read."""

import asyncio
import json
import time

import pytest

from mistralcli.tools.loop import Approvals, ToolCall, ToolRunner, round_messages
from mistralcli.tools.registry import Tool, ToolRegistry, ToolResult


def registry() -> ToolRegistry:
    reg = ToolRegistry()

    async def nap(args):
        await asyncio.sleep(args["seconds"])
        return ToolResult(f"napped {args['seconds']}")

    async def boom(args):
        raise OSError("no space left")

    async def erase(args):
        return ToolResult(f"erased {args['path']}")

    seconds = {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]}
    path = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
    reg.add(Tool("nap", "Sleep", seconds, nap))
    reg.add(Tool("boom", "Fail", {"type": "object"}, boom))
    reg.add(Tool("erase", "Erase a file", path, erase, dangerous=True))
    return reg


def run(runner: ToolRunner, calls: list[ToolCall], emit=None):
    return asyncio.run(runner.run(calls, emit))


def test_the_calls_of_a_round_run_at_once_and_come_back_in_order():
    calls = [ToolCall("a", "nap", '{"seconds": 0.3}'), ToolCall("b", "nap", '{"seconds": 0.2}')]
    start = time.perf_counter()
    outcomes = run(ToolRunner(registry()), calls)
    assert time.perf_counter() - start < 0.45
    assert [(o.call.id, o.result.text, o.outcome) for o in outcomes] == [
        ("a", "napped 0.3", "ok"),
        ("b", "napped 0.2", "ok"),
    ]
    assert outcomes[0].seconds >= 0.3 > outcomes[1].seconds


@pytest.mark.parametrize(
    ("call", "outcome", "text"),
    [
        (ToolCall("1", "boom", "{}"), "error", "boom failed: no space left"),
        (ToolCall("2", "nope", "{}"), "unknown_tool", "no tool named 'nope' (the tools: boom, erase, nap)"),
        (ToolCall("3", "nap", "{seconds: 1}"), "invalid_arguments", "nap: the arguments are not valid JSON"),
        (ToolCall("4", "nap", '{"seconds": "long"}'), "invalid_arguments", "nap: seconds: 'long' is not of type"),
        (ToolCall("5", "nap", "[1]"), "invalid_arguments", "nap: the arguments are a JSON object, not list"),
    ],
)
def test_a_call_that_fails_is_an_error_result_not_an_exception(call, outcome, text):
    seen = []
    runner = ToolRunner(registry(), observe=lambda name, what, secs: seen.append((name, what)))
    [done] = run(runner, [call])
    assert done.outcome == outcome and done.result.is_error and done.result.text.startswith(text)
    assert seen == [(call.name, outcome)]
    assert done.message() == {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": done.result.text}


def test_deny_refuses_dangerous_tools_only_and_auto_runs_them():
    calls = [ToolCall("1", "erase", '{"path": "x"}'), ToolCall("2", "nap", '{"seconds": 0}')]
    denied, napped = run(ToolRunner(registry(), permission="deny"), calls)
    assert denied.outcome == "denied" and "not run: the call was denied" in denied.result.text
    assert napped.outcome == "ok"
    erased, _ = run(ToolRunner(registry(), permission="auto"), calls)
    assert erased.result.text == "erased x"
    with pytest.raises(ValueError, match="'sometimes' is not one of auto, ask, deny"):
        ToolRunner(registry(), permission="sometimes")


def test_ask_waits_for_the_decision_and_a_timeout_denies():
    async def scenario(decision):
        approvals = Approvals(timeout_s=0.3)
        runner = ToolRunner(registry(), permission="ask", approvals=approvals)
        events = []

        async def emit(event):
            events.append(event)
            if event["type"] == "approval_required":
                assert [a.id for a in approvals.pending()] == [event["approval_id"]]
                assert event["name"] == "erase" and 0 < event["expires_in_s"] <= 0.3
                if decision is not None:
                    assert approvals.decide(event["approval_id"], decision) is not None
                    assert approvals.decide(event["approval_id"], decision) is None  # decided once

        [done] = await runner.run([ToolCall("1", "erase", '{"path": "x"}')], emit)
        assert approvals.pending() == []
        return done, events

    done, events = asyncio.run(scenario(True))
    assert done.result.text == "erased x"
    assert [e["type"] for e in events] == ["tool_call", "approval_required", "approval", "tool_result"]
    assert events[2]["decision"] == "approved"
    done, events = asyncio.run(scenario(False))
    assert done.outcome == "denied" and events[2]["decision"] == "denied"
    done, events = asyncio.run(scenario(None))
    assert done.outcome == "denied" and events[2]["decision"] == "timeout"
    assert "no approval came within 0.3 s" in done.result.text


def test_the_rounds_messages_carry_the_calls_then_their_results():
    outcomes = run(ToolRunner(registry()), [ToolCall("c1", "nap", '{"seconds": 0}'), ToolCall("c2", "boom", "{}")])
    assistant, first, second = round_messages("Checking.", outcomes)
    assert assistant == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "nap", "arguments": {"seconds": 0}}},
            {"id": "c2", "type": "function", "function": {"name": "boom", "arguments": {}}},
        ],
    }
    assert (first["tool_call_id"], first["content"]) == ("c1", "napped 0")
    assert (second["tool_call_id"], second["content"]) == ("c2", "boom failed: no space left")


def test_a_call_in_openai_shape_becomes_a_tool_call():
    call = ToolCall.of({"id": "x", "type": "function", "function": {"name": "nap", "arguments": '{"seconds": 1}'}})
    assert call == ToolCall("x", "nap", '{"seconds": 1}') and ToolCall.of(call.openai()) == call
    call = ToolCall.of({"function": {"name": "nap", "arguments": {"seconds": 1}}})
    assert call.id.startswith("call_") and json.loads(call.arguments) == {"seconds": 1}
