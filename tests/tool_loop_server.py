"""The tool loop's test server, a fixture plugin (tests/conftest.py loads it): `make_server(script, ...)` starts
an in-process `mistral serve` whose engine answers script(prompt) (server_harness.ScriptedEngine) with
SmolLM2's tokenizer, a short Hermes template like Qwen2.5's, and registered tools that record when they ran."""

import asyncio
import json
import time

import httpx
import pytest
from server_harness import InProcessServer, ScriptedEngine

from mistralcli.tools.loop import Approvals, ToolRunner
from mistralcli.tools.registry import Tool, ToolRegistry, ToolResult

SLEEP_S = 0.6


def call(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


class Toolbox:
    """Registered tools that record when each call ran."""

    def __init__(self):
        self.registry = ToolRegistry()
        self.spans: list[tuple[str, float, float]] = []
        self.notes: list[str] = []
        number = {"type": "number"}
        self._add("slow_add", "Add two numbers, slowly", {"a": number, "b": number}, self.slow_add)
        self._add("slow_upper", "Upper-case a text, slowly", {"text": {"type": "string"}}, self.slow_upper)
        self._add("broken", "Always fails", {}, self.broken)
        self._add("write_note", "Write a note", {"text": {"type": "string"}}, self.write_note, dangerous=True)

    def _add(self, name, description, properties, fn, dangerous=False):
        schema = {"type": "object", "properties": properties, "required": list(properties)}
        self.registry.add(Tool(name, description, schema, fn, source="test", dangerous=dangerous))

    async def _timed(self, name, value):

        start = time.perf_counter()
        await asyncio.sleep(SLEEP_S)
        self.spans.append((name, start, time.perf_counter()))
        return ToolResult(str(value))

    async def slow_add(self, args):
        return await self._timed("slow_add", args["a"] + args["b"])

    async def slow_upper(self, args):
        return await self._timed("slow_upper", args["text"].upper())

    async def broken(self, args):
        raise RuntimeError("the disk is on fire")

    async def write_note(self, args):
        self.notes.append(args["text"])
        return ToolResult("written")


# Qwen2.5's way (Hermes' format) in short: the tools in the system message, calls as <tool_call> blocks, results
# as <tool_response> blocks in a user turn
HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
You may call these tools:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == "tool" %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content or "" }}
{%- for c in m.tool_calls or [] %}
<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def tool_results(prompt: str) -> int:
    return prompt.count("<tool_response>")


def two_calls_then_answer(prompt: str) -> str:
    if tool_results(prompt) == 0:
        return "Let me compute." + call("slow_add", a=2, b=3) + call("slow_upper", text="done")
    return "The sum is 5 and the word is DONE."


class LoopServer:
    def __init__(self, loaded, script, permission="auto", max_rounds=10, approval_timeout=30.0):
        from mistralcli.chat_template import ChatTemplate
        from mistralcli.engine.engine import Engine, EngineConfig
        from mistralcli.server.app import ServerSettings, make_app

        self.toolbox = Toolbox()
        runner = ToolRunner(self.toolbox.registry, permission=permission, approvals=Approvals(approval_timeout))
        engine = Engine(loaded.model, loaded.tokenizer, loaded.context_length, EngineConfig(kv_cache_mb=96))
        self.engine = ScriptedEngine(engine, script, token_delay=0.001)
        settings = ServerSettings(
            model_name="smollm2",
            chat_template=ChatTemplate(HERMES_TEMPLATE),
            access_log=None,
            tool_call_parser="hermes",
            tools=runner,
            max_tool_rounds=max_rounds,
        )
        self.server = InProcessServer(make_app(self.engine, settings))
        self.url = self.server.url

    def chat(self, **body) -> httpx.Response:
        body = {"messages": [{"role": "user", "content": "Add 2 and 3, and shout 'done'."}], **body}
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=60)

    def events(self, **body) -> list[dict]:
        """The stream's chunks, as JSON."""
        body = {"messages": [{"role": "user", "content": "Go."}], "stream": True, **body}
        chunks = []
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line[6:]))
        return chunks

    def close(self):
        self.server.stop(wait=10)


@pytest.fixture
def make_server(smollm2):
    servers = []

    def make(script, **kwargs):
        servers.append(LoopServer(smollm2, script, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()
