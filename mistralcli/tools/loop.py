"""Running the tool calls a model makes, for the tool loop (the server's and the Python API's): every call
of a round at once, each checked against its tool's schema, the dangerous ones (they write or run things)
under a permission, and each result made the tool message the model reads next.

`ToolRunner.run(calls, emit)` answers every call, never raises for a call that fails: an unknown tool,
arguments that are not JSON or violate the schema, a refused permission and a tool's own failure are all
results the model reads (with `outcome` saying which). `emit` gets the progress as it happens, as events
(dicts with a `type`): "tool_call", "approval_required", "approval" and "tool_result".

With the permission "ask", a dangerous call waits in `Approvals` for a person's yes or no (the server's
`POST /v1/agent/approvals/{id}`), and is denied when none comes in time."""

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mistralcli.tools.registry import ToolCallError, ToolRegistry, ToolResult

PERMISSIONS = ("auto", "ask", "deny")
DEFAULT_APPROVAL_TIMEOUT_S = 60.0

Emit = Callable[[dict], Awaitable[None]]


@dataclass
class ToolCall:
    """A call the model made: its id, the tool's name and the arguments as the JSON text it wrote."""

    id: str
    name: str
    arguments: str

    @classmethod
    def of(cls, call: dict) -> "ToolCall":
        """From OpenAI's message shape, {"id", "type", "function": {"name", "arguments"}}."""
        function = call["function"]
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        return cls(call.get("id") or f"call_{uuid.uuid4().hex[:24]}", function["name"], arguments)

    def openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class CallOutcome:
    """A call and what came of it. outcome: "ok", "error" (the tool failed), "unknown_tool",
    "invalid_arguments" or "denied"."""

    call: ToolCall
    result: ToolResult
    outcome: str
    seconds: float

    def message(self) -> dict:
        """The tool message that carries the result to the model."""
        return {"role": "tool", "tool_call_id": self.call.id, "name": self.call.name, "content": self.result.text}

    def event(self) -> dict:
        return {
            "type": "tool_result",
            "id": self.call.id,
            "name": self.call.name,
            "outcome": self.outcome,
            "is_error": self.outcome != "ok",
            "content": self.result.text,
            "duration_s": round(self.seconds, 6),
        }


def split_calls(calls: list[dict], names: set[str]) -> tuple[list[dict], list[dict]]:
    """The calls (OpenAI's shape) to the tools named (the ones run here), and the others (the caller's)."""
    ours = [c for c in calls if c["function"]["name"] in names]
    return ours, [c for c in calls if c["function"]["name"] not in names]


def held(tool: dict) -> dict:
    """An OpenAI tool marked strict: its calls held to its parameters by the grammars (for the tools run
    here, whose calls must be valid; the chat template still shows the tool as it was)."""
    return {**tool, "function": {**tool["function"], "strict": True}}


def round_messages(content: str, outcomes: list[CallOutcome]) -> list[dict]:
    """A round in the conversation: the assistant's message with its calls (arguments as objects, as chat
    templates take them; text that is not JSON stays text), then one tool message per result."""
    calls = []
    for o in outcomes:
        try:
            arguments = json.loads(o.call.arguments or "{}")
        except ValueError:
            arguments = o.call.arguments
        calls.append({"id": o.call.id, "type": "function", "function": {"name": o.call.name, "arguments": arguments}})
    return [{"role": "assistant", "content": content, "tool_calls": calls}, *(o.message() for o in outcomes)]


@dataclass
class Approval:
    id: str
    call: ToolCall
    expires: float  # time.time() when it is denied unasked
    decision: asyncio.Future = field(repr=False)

    def body(self) -> dict:
        return {
            "id": self.id,
            "call_id": self.call.id,
            "name": self.call.name,
            "arguments": self.call.arguments,
            "expires_in_s": round(max(0.0, self.expires - time.time()), 3),
        }


class Approvals:
    """Dangerous calls waiting for a person's decision, by approval id; each is denied after timeout_s."""

    def __init__(self, timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._pending: dict[str, Approval] = {}

    def open(self, call: ToolCall) -> Approval:
        approval = Approval(
            f"appr_{uuid.uuid4().hex[:24]}",
            call,
            time.time() + self.timeout_s,
            asyncio.get_running_loop().create_future(),
        )
        self._pending[approval.id] = approval
        return approval

    async def wait(self, approval: Approval) -> str:
        """ "approved", "denied" or "timeout"; the approval is closed after."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return "approved" if await approval.decision else "denied"
        except TimeoutError:
            return "timeout"
        finally:
            self._pending.pop(approval.id, None)

    def decide(self, approval_id: str, approved: bool) -> Approval | None:
        """Settle a pending approval; None when there is none of that id (unknown, decided or expired)."""
        approval = self._pending.pop(approval_id, None)
        if approval is None or approval.decision.done():
            return None
        approval.decision.set_result(bool(approved))
        return approval

    def pending(self) -> list[Approval]:
        return list(self._pending.values())


class ToolRunner:
    """Runs calls on the registry's tools. permission: what dangerous tools may do, "auto" (run), "ask"
    (wait for an approval) or "deny"; observe(tool, outcome, seconds) is told of every call (metrics)."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        permission: str = "auto",
        approvals: Approvals | None = None,
        observe: Callable[[str, str, float], None] | None = None,
    ):
        if permission not in PERMISSIONS:
            raise ValueError(f"permission {permission!r} is not one of {', '.join(PERMISSIONS)}")
        self.registry = registry
        self.permission = permission
        self.approvals = approvals or Approvals()
        self.observe = observe

    def __contains__(self, name: str) -> bool:
        return name in self.registry

    def __len__(self) -> int:
        return len(self.registry)

    def openai_tools(self, exclude: set[str] = frozenset()) -> list[dict]:
        """The registry's tools as OpenAI `tools` entries, but for the names in exclude."""
        return [tool.openai() for tool in self.registry if tool.name not in exclude]

    async def run(self, calls: list[ToolCall], emit: Emit | None = None) -> list[CallOutcome]:
        """Every call at once; the outcomes in the calls' order."""
        return list(await asyncio.gather(*(self._run_one(call, emit) for call in calls)))

    async def _run_one(self, call: ToolCall, emit: Emit | None) -> CallOutcome:
        start = time.perf_counter()
        if emit is not None:
            await emit({"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments})
        result, outcome = await self._result(call, emit)
        done = CallOutcome(call, result, outcome, time.perf_counter() - start)
        if self.observe is not None:
            self.observe(call.name, outcome, done.seconds)
        if emit is not None:
            await emit(done.event())
        return done

    async def _result(self, call: ToolCall, emit: Emit | None) -> tuple[ToolResult, str]:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError as exc:
            return ToolResult(f"{call.name}: the arguments are not valid JSON: {exc}", is_error=True), (
                "invalid_arguments"
            )
        try:
            tool = self.registry.check(call.name, arguments)
        except ToolCallError as exc:
            return ToolResult(str(exc), is_error=True), exc.kind
        if tool.dangerous and self.permission != "auto":
            verdict = "denied" if self.permission == "deny" else await self._ask(call, emit)
            if verdict != "approved":
                why = {
                    "denied": "the call was denied",
                    "timeout": f"no approval came within {self.approvals.timeout_s:g} s",
                }[verdict]
                text = f"{call.name}: not run: {why} (the agent permission is {self.permission!r})"
                return ToolResult(text, is_error=True), "denied"
        result = await self.registry.call(call.name, arguments)
        return result, "error" if result.is_error else "ok"

    async def _ask(self, call: ToolCall, emit: Emit | None) -> str:
        approval = self.approvals.open(call)
        if emit is not None:
            body = approval.body()
            event = {"type": "approval_required", "approval_id": body.pop("id"), "id": body.pop("call_id"), **body}
            await emit(event)
        verdict = await self.approvals.wait(approval)
        if emit is not None:
            await emit({"type": "approval", "approval_id": approval.id, "id": call.id, "decision": verdict})
        return verdict
