"""The Responses API's request (POST /v1/responses): its input items, tools (functions, and MCP servers a request
names), text format and reasoning, as pydantic models; and the items as chat messages (chat_messages) and as
GET .../input_items lists them (input_items)."""

import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from mistralcli.server import protocol
from mistralcli.server.base import APIError, invalid
from mistralcli.server.protocol import _Request  # unknown fields ignored, types strict

# reasoning.effort -> (think at all, the thought's token budget; None: unlimited)
EFFORTS = {
    "none": (False, None),
    "minimal": (False, None),
    "low": (True, 512),
    "medium": (True, 2048),
    "high": (True, None),
}


class TextPart(_Request):
    type: Literal["input_text", "output_text", "text", "refusal"]
    text: str = ""
    refusal: str | None = None


class MessageItem(_Request):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextPart]
    id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value):
        return protocol.text_parts_only(value, ("input_image", "input_file", "input_audio"))

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text if p.type != "refusal" else p.refusal or "" for p in self.content)


class FunctionCallItem(_Request):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None

    @field_validator("arguments")
    @classmethod
    def _an_object(cls, value):
        return protocol.json_object_text(value)


class FunctionCallOutputItem(_Request):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[TextPart]
    id: str | None = None

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(p.text for p in self.output)


class SkippedItem(_Request):
    """Items the model does not read again: an earlier thought, the server's own MCP calls and listings."""

    type: Literal["reasoning", "mcp_call", "mcp_list_tools"]


InputItem = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem | SkippedItem, Field(discriminator="type")
]


class FunctionTool(_Request):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _a_json_schema(cls, value):
        return protocol.check_json_schema(value)

    def chat_tool(self) -> dict:
        function = self.model_dump(exclude_none=True, exclude={"type"})
        return {"type": "function", "function": function}


class McpTool(_Request):
    """A request's own MCP server, over streamable HTTP: its tools (those allowed) run in the tool loop."""

    type: Literal["mcp"]
    server_label: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    server_url: Annotated[str, Field(pattern=r"^https?://")]
    allowed_tools: list[str] | dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    require_approval: Literal["always", "never"] | dict[str, Any] | None = Field(default=None, validate_default=True)
    server_description: str | None = None

    @field_validator("require_approval")
    @classmethod
    def _never(cls, value):
        if value != "never":
            raise ValueError(
                'asking for approvals over the Responses API is not supported: set "never" to have the server run '
                "the tools (or call them as function tools yourself)"
            )
        return value

    def allowed(self) -> set[str] | None:
        tools = self.allowed_tools
        if isinstance(tools, dict):
            tools = tools.get("tool_names")
        return set(tools) if tools is not None else None


class FormatText(_Request):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and (self.schema_ is None or not self.name):
            raise ValueError('type "json_schema" needs a name and a schema')
        return self

    def response_format(self) -> dict | None:
        if self.type == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema_}}
        return {"type": "json_object"} if self.type == "json_object" else None


class TextConfig(_Request):
    format: FormatText | None = None
    verbosity: str | None = None


class ReasoningConfig(_Request):
    effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(_Request):
    model: str | None = None
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None  # function tools (checked in function_tools)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _typed_items(cls, value):
        """An item with a role and no type is a message (as OpenAI takes it)."""
        if isinstance(value, list):
            return [
                {**i, "type": "message"} if isinstance(i, dict) and "type" not in i and "role" in i else i
                for i in value
            ]
        return value

    @field_validator("metadata")
    @classmethod
    def _sixteen_pairs(cls, value):
        if value is not None and (len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())):
            raise ValueError("at most 16 pairs, keys of up to 64 characters and values of up to 512")
        return value

    def items(self) -> list:
        return [MessageItem(role="user", content=self.input)] if isinstance(self.input, str) else self.input

    def parsed_tools(self) -> tuple[list[FunctionTool], list[McpTool]]:
        """The function tools and the MCP servers among tools; APIError (400) naming one that is wrong."""
        functions, servers = [], []
        for i, tool in enumerate(self.tools or []):
            kind = tool.get("type")
            model = {"function": FunctionTool, "mcp": McpTool}.get(kind)
            if model is None:
                raise APIError(400, f"tools.{i}: tools of type {kind!r} are not supported here", param=f"tools.{i}")
            try:
                (functions if model is FunctionTool else servers).append(model.model_validate(tool))
            except ValidationError as exc:
                raise invalid(exc, prefix=f"tools.{i}.") from None
        labels = [server.server_label for server in servers]
        if len(set(labels)) < len(labels):
            raise APIError(400, "tools: two MCP servers have one server_label", param="tools")
        return functions, servers

    def chat_tool_choice(self):
        choice = self.tool_choice
        if not isinstance(choice, dict):
            return choice
        if choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        raise APIError(
            400,
            'tool_choice: give "none", "auto", "required" or {"type": "function", "name": ...}',
            param="tool_choice",
        )


def chat_messages(items: list) -> list[dict]:
    """Input items as chat messages (OpenAI's chat shape): function calls join the assistant message before them,
    their outputs are tool messages."""
    messages: list[dict] = []
    for item in items:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
    return messages


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def input_items(items: list) -> list[dict]:
    """The request's input items as GET .../input_items lists them, each with an id."""
    listed = []
    for item in items:
        if isinstance(item, SkippedItem):
            continue
        body = item.model_dump(exclude_none=True)
        if isinstance(item, MessageItem):
            kind = "output_text" if item.role == "assistant" else "input_text"
            body["content"] = [{"type": kind, "text": item.text()}]
            body["status"] = "completed"
        body["id"] = item.id or item_id({"message": "msg", "function_call": "fc"}.get(item.type, "fco"))
        listed.append(body)
    return listed
