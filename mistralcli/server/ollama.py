"""Ollama's API: /api/chat and /api/generate (streamed as newline-delimited JSON by default, as Ollama does),
/api/tags, /api/show, /api/ps and /api/version, with Ollama's field names (`options` mapped to the sampling
parameters, `format` to structured output, `think` to the reasoning support). Generation is the chat handler's
machinery; errors are Ollama's `{"error": "..."}`. `keep_alive` sets how long the model stays loaded once idle
(model_manager: 0 unloads it after the request, a negative one keeps it)."""

import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from mistralcli.server import protocol
from mistralcli.server.base import APIError, BaseHandler
from mistralcli.server.chat import ChatCompletionsHandler, chat_request
from mistralcli.server.chat_choice import _ChatChoice
from mistralcli.server.embeddings import EmbeddingsMixin
from mistralcli.server.generate import _Usage
from mistralcli.server.model_manager import UNSET, parse_keep_alive
from mistralcli.server.protocol import _Request  # unknown fields ignored, types strict

log = logging.getLogger("mistralcli.server")
OLLAMA_API_VERSION = "0.12.6"  # the Ollama release whose API these routes follow (clients check for a minimum)
# options -> the chat request's fields (what Ollama has and we have; the rest, num_ctx, num_gpu, mirostat, ...,
# concern Ollama's runner and are ignored, as Ollama ignores options a model does not use)
OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repetition_penalty",
    "repeat_last_n": "penalty_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class ToolCallFunction(_Request):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class OllamaToolCall(_Request):
    function: ToolCallFunction


class OllamaMessage(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None

    @field_validator("images")
    @classmethod
    def _no_images(cls, value):
        if value:
            raise ValueError("images are not supported (this server's models read text)")
        return value


class _KeepAlive(_Request):
    model: Annotated[str, Field(min_length=1)]
    keep_alive: str | int | float | None = None  # how long the model stays loaded once idle

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value):
        if value is not None:
            parse_keep_alive(value)  # its ValueError is the 400
        return value

    def keep_alive_s(self):
        """Seconds, None (kept loaded), or UNSET (the request says nothing: the server's --keep-alive)."""
        return UNSET if self.keep_alive is None else parse_keep_alive(self.keep_alive)


class _OllamaGeneration(_KeepAlive):
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    stream: bool = True
    think: bool | Literal["low", "medium", "high"] | None = None

    def sampling(self) -> dict:
        """The chat request's sampling fields from options (their values checked by the chat request)."""
        body: dict[str, Any] = {"stream": self.stream}
        options = self.options or {}
        for theirs, ours in OPTIONS.items():
            if options.get(theirs) is not None:
                body[ours] = options[theirs]
        predict = options.get("num_predict")
        if isinstance(predict, int) and not isinstance(predict, bool) and predict > 0:
            body["max_tokens"] = predict  # -1 (no limit) and -2 (fill the context): the context's end
        elif predict is not None and predict not in (-1, -2):
            raise APIError(400, f"options.num_predict: give a positive number, -1 or -2, not {predict!r}")
        if isinstance(body.get("stop"), str):
            body["stop"] = [body["stop"]]
        if self.format == "json":
            body["response_format"] = {"type": "json_object"}
        elif isinstance(self.format, dict):
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": self.format}}
        if self.think is not None:
            body["chat_template_kwargs"] = {"enable_thinking": self.think is not False}
        return body


class OllamaChatRequest(_OllamaGeneration):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[protocol.Tool] | None = None

    def chat_messages(self) -> list[dict]:
        messages = []
        for i, m in enumerate(self.messages):
            message: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": f"call_{i}_{k}",
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments)},
                    }
                    for k, c in enumerate(m.tool_calls)
                ]
            if m.role == "tool" and m.tool_name:
                message["name"] = m.tool_name
            messages.append(message)
        return messages


class OllamaGenerateRequest(_OllamaGeneration):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[Annotated[int, Field(ge=0)]] | None = None
    images: list[str] | None = None

    @field_validator("suffix", "template")
    @classmethod
    def _not_supported(cls, value, info):
        if value:
            what = "fill-in-the-middle" if info.field_name == "suffix" else "a template of the request's own"
            raise ValueError(f"{what} is not supported")
        return value

    @field_validator("images")
    @classmethod
    def _no_images(cls, value):
        return OllamaMessage._no_images(value)


class OllamaHandler(BaseHandler):
    """Ollama's error shape, and its model names (ours, with or without the ":latest" tag)."""

    load_s = 0.0  # the time this request waited for its model to load

    def error_body(self, error: APIError) -> dict:
        return {"error": error.message}

    def model_not_found(self, name: str) -> APIError:
        served = ", ".join(repr(n) for n in self.state.models.names())
        return APIError(404, f"model {name!r} not found; this server serves {served}", code="model_not_found")

    async def use_requested_model(self, request: _KeepAlive) -> None:
        """The request's model, loaded if need be (its load time kept for load_duration), and its keep_alive."""
        began = time.perf_counter()
        await self.use_model(request.model, request.keep_alive_s())
        self.load_s = time.perf_counter() - began


class _OllamaGenerateHandler(OllamaHandler, ChatCompletionsHandler):
    thinking_budget_optional = True
    response_field = ""  # "message" (chat) or "response" (generate)

    def initialize(self, state):
        super().initialize(state)
        self.began = time.perf_counter()
        self.first_output: float | None = None
        self.prompt_ids: list[int] = []

    async def _answer(self, request: _OllamaGeneration, body: dict) -> None:
        body.update(request.sampling())
        await self.chat(chat_request(body, {ours: f"options.{theirs}" for theirs, ours in OPTIONS.items()}))

    def _loaded(self, request: _OllamaGeneration, **fields) -> None:
        """An empty request: Ollama's way of loading a model (it is loaded now), or with keep_alive 0 of unloading
        it (it is, once this request lets it go)."""
        reason = "unload" if request.keep_alive_s() == 0 else "load"
        self.write_json({"model": request.model, "created_at": _now(), **fields, "done": True, "done_reason": reason})

    def encode_rendered(self, text: str) -> list[int]:
        self.prompt_ids = super().encode_rendered(text)
        return self.prompt_ids

    # ---- the answer
    def _piece(self, content: str, thinking: str = "", tool_calls: list | None = None) -> dict:
        raise NotImplementedError  # the answer's text in this route's shape

    def _head(self) -> dict:
        return {"model": self.parsed_model, "created_at": _now()}

    def _done(self, usage: _Usage) -> dict:
        now = time.perf_counter()
        first = self.first_output or now
        reason = "length" if self.final is not None and self.final.finish_reason == "length" else "stop"
        return {
            "done": True,
            "done_reason": reason,
            "total_duration": _ns(now - self.began),
            "load_duration": _ns(self.load_s),
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": _ns(first - self.began - self.load_s),
            "eval_count": usage.completion_tokens,
            "eval_duration": _ns(now - first),
        }

    def _response(self, choices: list[_ChatChoice], usage: _Usage) -> dict:
        choice = choices[0]
        return {**self._head(), **self._piece(choice.content, choice.reasoning, choice.tool_calls), **self._done(usage)}

    async def _open_stream(self):
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        await self.flush()

    async def _merge(self, streams):
        async for i, out in super()._merge(streams):
            if self.first_output is None:  # the prompt's evaluation ends here (Ollama's timings)
                self.first_output = time.perf_counter()
            yield i, out

    async def _send_chunk(self, choice: _ChatChoice, out, piece) -> None:
        choice.started = True
        if piece.content or piece.reasoning:
            await self._line({**self._head(), **self._piece(piece.content, piece.reasoning), "done": False})

    async def _send_cut(self, choice: _ChatChoice) -> None:
        """The last line says it (done_reason)."""

    async def _send_tool_event(self, event: dict) -> None:
        """The server's own tool calls are not streamed here."""

    async def _end_stream(self, usage: _Usage):
        calls = self.final.tool_calls if self.final is not None else []
        last = {**self._head(), **self._piece("", "", calls), **self._done(usage)}
        await self._line(last)
        self.finish()

    async def _send_error(self, error: APIError) -> None:
        await self._line({"error": error.message})

    async def _line(self, obj: dict) -> None:
        await self._sse_raw(json.dumps(obj, ensure_ascii=False) + "\n")


def _ollama_calls(tool_calls: list[dict]) -> list[dict]:
    calls = []
    for call in tool_calls:
        function = call["function"]
        calls.append({"function": {"name": function["name"], "arguments": json.loads(function["arguments"] or "{}")}})
    return calls


class OllamaChatHandler(_OllamaGenerateHandler):
    route = "/api/chat"
    id_prefix = "ollama-chat-"
    prompt_param = "messages"

    async def post(self):
        request = self.parse(OllamaChatRequest)
        await self.use_requested_model(request)
        self.parsed_model = request.model
        if not request.messages:
            self._loaded(request, message={"role": "assistant", "content": ""})
            return
        body: dict[str, Any] = {"messages": request.chat_messages()}
        if request.tools:
            body["tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
        await self._answer(request, body)

    def _piece(self, content: str, thinking: str = "", tool_calls: list | None = None) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = _ollama_calls(tool_calls)
        return {"message": message}


class OllamaGenerateHandler(_OllamaGenerateHandler):
    route = "/api/generate"
    id_prefix = "ollama-generate-"
    prompt_param = "prompt"

    def initialize(self, state):
        super().initialize(state)
        self.raw = False
        self.context: list[int] = []

    async def post(self):
        request = self.parse(OllamaGenerateRequest)
        await self.use_requested_model(request)
        self.parsed_model = request.model
        if not request.prompt:
            self._loaded(request, response="")
            return
        self.raw = request.raw or self.state.settings.chat_template is None  # no template: the prompt as it is
        self.context = list(request.context or [])
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": request.prompt})
        self.raw_prompt = (request.system + "\n\n" if request.system and self.raw else "") + request.prompt
        await self._answer(request, {"messages": messages})

    def _render(self, request, messages=None) -> str:
        return self.raw_prompt if self.raw else super()._render(request, messages)

    def _choose_parsers(self, request, prompt: str) -> None:
        if not self.raw:
            super()._choose_parsers(request, prompt)

    def encode_rendered(self, text: str) -> list[int]:
        if self.raw:  # the prompt as it is, special tokens included, after the context
            ids = self.state.tokenizer.encode(text, add_special=False)
        else:
            ids = super().encode_rendered(text)
        bad = [t for t in self.context if t >= self.state.tokenizer.vocab_size]
        if bad:
            raise APIError(400, f"context: token id {bad[0]} is outside the vocabulary")
        self.prompt_ids = self.context + ids
        return self.prompt_ids

    def _piece(self, content: str, thinking: str = "", tool_calls: list | None = None) -> dict:
        piece: dict[str, Any] = {"response": content}
        if thinking:
            piece["thinking"] = thinking
        return piece

    def _done(self, usage: _Usage) -> dict:
        output = self.final.token_ids if self.final is not None else []
        return {**super()._done(usage), "context": self.prompt_ids + list(output)}


class EmbedRequest(_KeepAlive):
    input: str | Annotated[list[str], Field(min_length=1)]
    truncate: bool = True  # Ollama's default: an input over the model's length is cut
    dimensions: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, Any] | None = None


class OllamaEmbedHandler(EmbeddingsMixin, OllamaHandler):
    route = "/api/embed"

    async def post(self):
        began = time.perf_counter()
        request = self.parse(EmbedRequest)
        await self.use_requested_model(request)
        inputs = [request.input] if isinstance(request.input, str) else request.input
        vectors, tokens = await self.embed(inputs, request.truncate, request.dimensions)
        self.write_json(
            {
                "model": request.model,
                "embeddings": vectors.tolist(),
                "total_duration": _ns(time.perf_counter() - began),
                "load_duration": _ns(self.load_s),
                "prompt_eval_count": tokens,
            }
        )


class LegacyEmbeddingsRequest(_KeepAlive):
    prompt: str
    options: dict[str, Any] | None = None


class OllamaEmbeddingsHandler(EmbeddingsMixin, OllamaHandler):
    """The older /api/embeddings: one prompt, one vector (Ollama's own, kept for its older clients)."""

    route = "/api/embeddings"

    async def post(self):
        request = self.parse(LegacyEmbeddingsRequest)
        await self.use_requested_model(request)
        if not request.prompt:
            self.write_json({"embedding": []})
            return
        vectors, _ = await self.embed([request.prompt], True, None)
        self.write_json({"embedding": vectors[0].tolist()})
