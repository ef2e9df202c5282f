"""The OpenAI-compatible HTTP server: tornado handlers over an AsyncEngine.

`make_app(engine, settings)` returns a tornado Application; `routes(state)` gives the handlers alone,
to mount in an application of one's own. Every error a client can cause is answered in OpenAI's
shape, `{"error": {"message", "type", "param", "code"}}`, and nothing is queued for it. The event loop
never computes: the engine steps in its own thread (AsyncEngine) and the kernels release the GIL.
"""

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TextIO

import tornado.web
from pydantic import ValidationError
from tornado.iostream import StreamClosedError

from mistralcli.engine.async_engine import AsyncEngine, EngineDeadError
from mistralcli.engine.engine import Engine, RequestError
from mistralcli.errors import MistralError
from mistralcli.server import protocol
from mistralcli.server.limits import ApiKeys, RateLimit, RateLimiter
from mistralcli.server.metrics import ServerMetrics

DEFAULT_MAX_BODY_BYTES = 4 << 20


class APIError(tornado.web.HTTPError):
    """An error answered to the client in OpenAI's shape (an HTTPError, so tornado keeps its status)."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(status)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ServerSettings:
    model_name: str  # the id /v1/models lists and requests must name (or leave out)
    chat_template: Any = None  # mistralcli.chat_template.ChatTemplate, or None: no chat completions
    sampling_defaults: dict = field(default_factory=dict)  # the model's recommended sampling values
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    rate_limit: RateLimit | None = None
    cors_origins: tuple[str, ...] = ()  # "*" for any
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    access_log: TextIO | None = sys.stderr  # one line per request; None: quiet
    request_log: TextIO | None = None  # one JSON line per request with its body and result


class ServerState:
    """What the handlers share: the engine, the settings, the limiter, the metrics, the requests in flight."""

    def __init__(self, engine: AsyncEngine | Engine, settings: ServerSettings):
        self.engine = engine if isinstance(engine, AsyncEngine) else AsyncEngine(engine)
        self.settings = settings
        self.tokenizer = self.engine.engine.tokenizer
        self.context_length = self.engine.engine.context_length
        self.limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self.metrics = ServerMetrics(self.engine.engine)
        self.created = int(time.time())
        self.in_flight: set[str] = set()  # request ids being served
        self.shutting_down = False

    @property
    def alive(self) -> bool:
        return self.engine.error is None and self.engine._thread.is_alive()


# ---- the handlers' common part --------------------------------------------------------------------
class BaseHandler(tornado.web.RequestHandler):
    route = ""
    needs_key = True

    def initialize(self, state: ServerState):
        self.state = state
        self.key = None
        self.usage = None  # (prompt, completion) tokens, for the logs
        self.log_record: dict = {}
        self.set_default_headers()  # tornado called it before the state was here

    def set_default_headers(self):
        self.set_header("Content-Type", "application/json")
        state = getattr(self, "state", None)
        origins = state.settings.cors_origins if state is not None else ()
        origin = self.request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            self.set_header("Access-Control-Allow-Origin", "*" if "*" in origins else origin)
            self.set_header("Vary", "Origin")
            self.set_header("Access-Control-Expose-Headers", "x-request-id, x-ratelimit-limit-requests, "
                            "x-ratelimit-remaining-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, "
                            "retry-after")

    def prepare(self):
        self.started = time.perf_counter()
        if self.request.method == "OPTIONS":
            return
        if self.needs_key and self.state.settings.api_keys:
            self.key = self.state.settings.api_keys.check(self.request.headers.get("Authorization"))
            if self.key is None:
                raise APIError(401, "a valid API key is required: send 'Authorization: Bearer KEY'",
                               "authentication_error", code="invalid_api_key")
        length = self.request.headers.get("Content-Length")
        if (length and length.isdigit() and int(length) > self.state.settings.max_body_bytes) or \
                len(self.request.body or b"") > self.state.settings.max_body_bytes:
            raise APIError(413, f"the request body is larger than {self.state.settings.max_body_bytes} bytes",
                           code="request_too_large")

    def options(self, *args):  # CORS preflight
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def write_error(self, status_code: int, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, APIError):
            error = exc
        elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            error = APIError(status_code, exc.log_message or self._reason, code=None)
        else:
            error = APIError(status_code, "the server failed on this request; it has been logged", "server_error")
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error.body()))

    def log_exception(self, typ, value, tb):
        if isinstance(value, APIError):
            return  # the client's mistake, answered in the body
        super().log_exception(typ, value, tb)

    def on_finish(self):
        seconds = time.perf_counter() - getattr(self, "started", time.perf_counter())
        status = self.get_status()
        self.state.metrics.observe(self.route or "other", status, seconds)
        log = self.state.settings.access_log
        usage = f" {self.usage[0]}+{self.usage[1]} tok" if self.usage else ""
        if log is not None:
            print(f"{self.request.method} {self.request.path} {status}{usage} {seconds * 1000:.0f} ms", file=log,
                  flush=True)
        record_log = self.state.settings.request_log
        if record_log is not None:
            record = {"time": time.time(), "method": self.request.method, "path": self.request.path,
                      "status": status, "latency_s": round(seconds, 6),
                      "usage": {"prompt_tokens": self.usage[0], "completion_tokens": self.usage[1]} if self.usage else None,
                      **self.log_record}
            record_log.write(json.dumps(record, ensure_ascii=False) + "\n")
            record_log.flush()

    # ---- helpers
    def parse(self, model_cls):
        """The JSON body as model_cls, or a 400 naming the field that is wrong."""
        try:  # whatever the Content-Type says (curl -d sends a form's), as llama.cpp and vLLM do
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object", code="invalid_json")
        self.log_record["request"] = body
        try:
            return model_cls.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(part) for part in first["loc"] if not str(part).startswith(("function-after", "list[", "str", "int")))
            message = first["msg"].removeprefix("Value error, ")
            raise APIError(400, f"{param}: {message}" if param else message, param=param or None,
                           code="invalid_value") from None

    def check_model(self, name: str | None):
        if name and name != self.state.settings.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                                f"{self.state.settings.model_name!r}", param="model", code="model_not_found")

    def write_json(self, obj, status: int = 200):
        self.set_status(status)
        self.finish(json.dumps(obj, ensure_ascii=False))

    def render_chat(self, messages: list[dict], tools, add_generation_prompt: bool, kwargs: dict | None) -> str:
        template = self.state.settings.chat_template
        if template is None:
            raise APIError(400, "this model has no chat template: use /v1/completions with plain text",
                           param="messages", code="no_chat_template")
        try:
            return template.render(messages, add_generation_prompt=add_generation_prompt,
                                   tools=[t.model_dump(exclude_none=True) for t in tools] if tools else None,
                                   **(kwargs or {}))
        except (MistralError, TypeError) as exc:
            raise APIError(400, str(exc), param="messages", code="chat_template_error") from None

    def encode_rendered(self, text: str) -> list[int]:
        tokenizer = self.state.tokenizer
        bos = tokenizer.bos_token
        return tokenizer.encode(text, add_special=not (bos and text.startswith(bos)))


# ---- generation: chat and text completions ----------------------------------------------------------
@dataclass
class _Choice:
    index: int
    text: str = ""
    token_ids: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None
    started: bool = False


def _finish_reason(reason: str | None) -> str:
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


class _GenerateHandler(BaseHandler):
    kind = ""  # "chat" or "text"

    def initialize(self, state: ServerState):
        super().initialize(state)
        self.request_ids: list[str] = []
        self.tasks: list[asyncio.Task] = []
        self.closed = False

    def on_connection_close(self):
        """The client left: stop its requests now, which frees their blocks."""
        self.closed = True
        for task in self.tasks:
            task.cancel()
        for request_id in self.request_ids:
            self.state.engine.cancel(request_id)

    async def generate(self, request: protocol._Sampling, prompts: list[list[int]], prompt_texts: list[str | None],
                       logprobs: int | None):
        state = self.state
        if state.shutting_down:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        if not state.alive:
            raise APIError(503, "the engine has stopped; see the server's log", "server_error", code="engine_dead")
        max_tokens = request.requested_max_tokens()
        param = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) else "max_tokens"
        try:
            params = protocol.sampling_params(request, state.settings.sampling_defaults, logprobs, max_tokens,
                                              state.tokenizer.vocab_size)
        except ValueError as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        engine = state.engine.engine
        for ids in prompts:
            if len(ids) + (max_tokens or 1) > state.context_length:
                raise APIError(400, f"this model's context is {state.context_length} tokens; the prompt is {len(ids)} "
                                    f"tokens" + (f" and {param} is {max_tokens}" if max_tokens else ""),
                               param="messages" if self.kind == "chat" else "prompt", code="context_length_exceeded")
            try:
                engine.validate(ids, engine.max_tokens_for(params))
            except RequestError as exc:
                raise APIError(400, str(exc), param="messages" if self.kind == "chat" else "prompt",
                               code="invalid_prompt") from None
        reserved = sum(len(ids) + (max_tokens or 0) * request.n for ids in prompts)
        rate_key = self.key or self.request.remote_ip or "-"
        if state.limiter is not None:
            decision = state.limiter.admit(rate_key, reserved)
            for name, value in decision.headers.items():
                self.set_header(name, value)
            if not decision.allowed:
                headers = dict(decision.headers)
                if decision.retry_after:
                    headers["Retry-After"] = str(max(1, int(decision.retry_after + 0.999)))
                raise APIError(429, decision.message, "rate_limit_error", code="rate_limit_exceeded", headers=headers)

        base = f"{'chatcmpl' if self.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.set_header("x-request-id", base)
        queue: asyncio.Queue = asyncio.Queue()
        streams = []
        try:
            for i, ids in enumerate(prompts):
                request_id, stream = state.engine.add_request(ids, params, f"{base}-{i}")
                self.request_ids.append(request_id)
                state.in_flight.add(request_id)
                streams.append(stream)
        except RequestError as exc:
            self._cancel_all()
            raise APIError(400, str(exc), code="invalid_prompt") from None
        except EngineDeadError as exc:
            self._cancel_all()
            raise APIError(503, str(exc), "server_error", code="engine_dead") from None

        async def pump(i, stream):
            try:
                async for out in stream:
                    queue.put_nowait((i, out))
            except asyncio.CancelledError:
                await stream.aclose()
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the handler
                queue.put_nowait((i, exc))
            finally:
                queue.put_nowait((i, None))

        self.tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
        choices = {(i, j): _Choice(i * request.n + j) for i in range(len(prompts)) for j in range(request.n)}
        usage = {"prompt_tokens": sum(len(ids) for ids in prompts), "completion_tokens": 0, "cached": 0}
        created = int(time.time())
        include_usage = bool(request.stream and request.stream_options and request.stream_options.include_usage)
        if request.stream:
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")
        try:
            open_streams = len(streams)
            while open_streams:
                i, out = await queue.get()
                if out is None:
                    open_streams -= 1
                    continue
                if isinstance(out, BaseException):
                    raise out
                choice = choices[i, out.index]
                choice.text += out.text
                choice.token_ids += out.new_token_ids
                if out.logprobs:
                    choice.logprobs += out.logprobs
                usage["completion_tokens"] += len(out.new_token_ids)
                if out.finished:
                    choice.finish_reason = _finish_reason(out.finish_reason)
                    usage["cached"] = max(usage["cached"], out.num_cached_tokens)
                if request.stream:
                    await self._send_chunk(base, created, choice, out, prompt_texts, include_usage, logprobs)
            self.usage = (usage["prompt_tokens"], usage["completion_tokens"])
            usage_body = {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                          "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                          "prompt_tokens_details": {"cached_tokens": usage["cached"]}}
            ordered = [choices[key] for key in sorted(choices, key=lambda k: choices[k].index)]
            self.log_record["response"] = {"id": base, "choices": [{"text": c.text, "finish_reason": c.finish_reason}
                                                                   for c in ordered]}
            if request.stream:
                if include_usage:
                    await self._sse({"id": base, "object": self._chunk_object(), "created": created,
                                     "model": state.settings.model_name, "choices": [], "usage": usage_body})
                await self._sse_raw("data: [DONE]\n\n")
                self.finish()
            else:
                self.write_json(self._response(base, created, ordered, prompt_texts, usage_body, logprobs, request.n))
        except StreamClosedError:
            self.on_connection_close()
        except asyncio.CancelledError:
            if not self.closed:
                raise
        except RequestError as exc:
            self._fail(APIError(400, str(exc), code="invalid_prompt"))
        except EngineDeadError as exc:
            self._fail(APIError(503, str(exc), "server_error", code="engine_dead"))
        finally:
            self._cancel_all()
            for request_id in self.request_ids:
                state.in_flight.discard(request_id)
            if state.limiter is not None:
                state.limiter.settle(rate_key, usage["prompt_tokens"] + usage["completion_tokens"] - reserved)

    def _cancel_all(self):
        for task in self.tasks:
            if not task.done():
                task.cancel()
        for request_id in self.request_ids:
            self.state.engine.cancel(request_id)

    def _fail(self, error: APIError):
        if self._headers_written:  # mid-stream: an error event, then the end
            asyncio.ensure_future(self._sse_raw(f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n"))
            self.finish()
        else:
            raise error

    async def _sse(self, obj):
        await self._sse_raw(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n")

    async def _sse_raw(self, text: str):
        if self.closed:
            raise StreamClosedError()
        self.write(text)
        await self.flush()

    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def _token(self, token_id: int) -> tuple[str, list[int]]:
        raw = self.state.tokenizer.decode_bytes([token_id], skip_special=False)
        return raw.decode("utf-8", errors="replace"), list(raw)

    def _chat_logprobs(self, entries) -> dict:
        content = []
        for e in entries:
            text, raw = self._token(e.token_id)
            top = []
            for token_id, lp in e.top:
                t, b = self._token(token_id)
                top.append({"token": t, "logprob": lp, "bytes": b})
            content.append({"token": text, "logprob": e.logprob, "bytes": raw, "top_logprobs": top})
        return {"content": content}

    def _text_logprobs(self, entries, offset: int) -> dict:
        tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
        for e in entries:
            text, _ = self._token(e.token_id)
            tokens.append(text)
            token_logprobs.append(e.logprob)
            top_logprobs.append({self._token(t)[0]: lp for t, lp in e.top})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}

    async def _send_chunk(self, base, created, choice: _Choice, out, prompt_texts, include_usage, logprobs):
        if self.kind == "chat":
            delta = {} if choice.started else {"role": "assistant", "content": ""}
            choice.started = True
            if out.text:
                delta["content"] = out.text
            body = {"index": choice.index, "delta": delta,
                    "logprobs": self._chat_logprobs(out.logprobs) if logprobs is not None and out.logprobs else None,
                    "finish_reason": choice.finish_reason if out.finished else None}
        else:
            text = out.text
            if not choice.started:
                choice.started = True
                if getattr(self, "echo", False):
                    text = (prompt_texts[choice.index // max(1, self._n)] or "") + text
            body = {"index": choice.index, "text": text,
                    "logprobs": self._text_logprobs(out.logprobs or [], 0) if logprobs is not None else None,
                    "finish_reason": choice.finish_reason if out.finished else None}
        if not out.text and not out.finished and not (self.kind == "chat" and "role" in body["delta"]):
            return
        chunk = {"id": base, "object": self._chunk_object(), "created": created,
                 "model": self.state.settings.model_name, "choices": [body]}
        if self.kind == "chat":
            chunk["system_fingerprint"] = None
        if include_usage:
            chunk["usage"] = None
        await self._sse(chunk)

    def _response(self, base, created, ordered, prompt_texts, usage, logprobs, n) -> dict:
        if self.kind == "chat":
            choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                        "logprobs": self._chat_logprobs(c.logprobs) if logprobs is not None else None,
                        "finish_reason": c.finish_reason} for c in ordered]
            return {"id": base, "object": "chat.completion", "created": created,
                    "model": self.state.settings.model_name, "choices": choices, "usage": usage,
                    "system_fingerprint": None}
        choices = []
        for c in ordered:
            prefix = (prompt_texts[c.index // n] or "") if getattr(self, "echo", False) else ""
            choices.append({"index": c.index, "text": prefix + c.text,
                            "logprobs": self._text_logprobs(c.logprobs, len(prefix)) if logprobs is not None else None,
                            "finish_reason": c.finish_reason})
        return {"id": base, "object": "text_completion", "created": created, "model": self.state.settings.model_name,
                "choices": choices, "usage": usage}


class ChatCompletionsHandler(_GenerateHandler):
    route = "/v1/chat/completions"
    kind = "chat"

    async def post(self):
        request = self.parse(protocol.ChatCompletionRequest)
        self.check_model(request.model)
        if request.top_logprobs is not None and not request.logprobs:
            raise APIError(400, "top_logprobs needs logprobs set to true", param="top_logprobs", code="invalid_value")
        text = self.render_chat(request.template_messages(), request.tools, request.add_generation_prompt,
                                request.chat_template_kwargs)
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        await self.generate(request, [self.encode_rendered(text)], [None], logprobs)


class CompletionsHandler(_GenerateHandler):
    route = "/v1/completions"
    kind = "text"

    async def post(self):
        request = self.parse(protocol.CompletionRequest)
        self.check_model(request.model)
        self.echo, self._n = request.echo, request.n
        tokenizer = self.state.tokenizer
        prompts, texts = [], []
        for prompt in request.prompts():
            if isinstance(prompt, str):
                if not prompt:
                    raise APIError(400, "prompt: the prompt is empty", param="prompt", code="invalid_value")
                prompts.append(tokenizer.encode(prompt))
                texts.append(prompt)
            else:
                bad = [t for t in prompt if t >= tokenizer.vocab_size]
                if bad:
                    raise APIError(400, f"prompt: token id {bad[0]} is outside the vocabulary "
                                        f"({tokenizer.vocab_size} tokens)", param="prompt", code="invalid_value")
                prompts.append(list(prompt))
                texts.append(tokenizer.decode(prompt))
        await self.generate(request, prompts, texts, request.logprobs)


# ---- the other routes -----------------------------------------------------------------------------
class ModelsHandler(BaseHandler):
    route = "/v1/models"

    def _card(self) -> dict:
        return {"id": self.state.settings.model_name, "object": "model", "created": self.state.created,
                "owned_by": "mistralcli", "max_model_len": self.state.context_length}

    def get(self, model_id: str | None = None):
        if model_id is None:
            self.write_json({"object": "list", "data": [self._card()]})
            return
        if model_id != self.state.settings.model_name:
            raise APIError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")
        self.write_json(self._card())


class HealthHandler(BaseHandler):
    route = "/health"
    needs_key = False

    def get(self):
        if not self.state.alive:
            raise APIError(503, "the engine has stopped", "server_error", code="engine_dead")
        self.write_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    route = "/ready"
    needs_key = False

    def get(self):
        if self.state.shutting_down or not self.state.alive:
            raise APIError(503, "not ready: " + ("shutting down" if self.state.shutting_down else "the engine has stopped"),
                           "server_error", code="not_ready")
        stats = self.state.engine.engine.stats()
        self.write_json({"status": "ready", "model": self.state.settings.model_name, "running": stats["running"],
                         "waiting": stats["waiting"]})


class MetricsHandler(BaseHandler):
    route = "/metrics"
    needs_key = False

    def get(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.state.metrics.registry))


class TokenizeHandler(BaseHandler):
    route = "/tokenize"

    def post(self):
        request = self.parse(protocol.TokenizeRequest)
        self.check_model(request.model)
        if (request.prompt is None) == (request.messages is None):
            raise APIError(400, "give either prompt or messages", param="prompt", code="invalid_value")
        if request.messages is not None:
            text = self.render_chat(_template_messages(request.messages), request.tools,
                                    request.add_generation_prompt, request.chat_template_kwargs)
            tokens = self.encode_rendered(text)
        else:
            tokens = self.state.tokenizer.encode(request.prompt, add_special=request.add_special_tokens)
        self.write_json({"tokens": tokens, "count": len(tokens), "max_model_len": self.state.context_length})


def _template_messages(messages) -> list[dict]:
    return protocol.ChatCompletionRequest(messages=messages).template_messages()


class DetokenizeHandler(BaseHandler):
    route = "/detokenize"

    def post(self):
        request = self.parse(protocol.DetokenizeRequest)
        self.check_model(request.model)
        bad = [t for t in request.tokens if t >= self.state.tokenizer.vocab_size]
        if bad:
            raise APIError(400, f"tokens: token id {bad[0]} is outside the vocabulary", param="tokens",
                           code="invalid_value")
        self.write_json({"prompt": self.state.tokenizer.decode(request.tokens, skip_special=False)})


class ChatTemplateHandler(BaseHandler):
    route = "/v1/chat/template"

    def post(self):
        request = self.parse(protocol.ChatTemplateRequest)
        self.check_model(request.model)
        text = self.render_chat(_template_messages(request.messages), request.tools, request.add_generation_prompt,
                                request.chat_template_kwargs)
        tokens = self.encode_rendered(text)
        self.write_json({"text": text, "tokens": tokens, "token_count": len(tokens)})


class OpenAPIHandler(BaseHandler):
    route = "/openapi.json"
    needs_key = False

    def get(self):
        from mistralcli.server.openapi import openapi_document

        self.write_json(openapi_document(self.state.settings.model_name))


class NotFoundHandler(BaseHandler):
    route = "not_found"
    needs_key = False

    def prepare(self):
        super().prepare()
        raise APIError(404, f"no route {self.request.method} {self.request.path}", code="not_found")


def routes(state: ServerState) -> list:
    """The server's handlers, to mount in a tornado Application (see make_app)."""
    args = {"state": state}
    return [
        (r"/v1/chat/completions", ChatCompletionsHandler, args),
        (r"/v1/completions", CompletionsHandler, args),
        (r"/v1/models", ModelsHandler, args),
        (r"/v1/models/(.+)", ModelsHandler, args),
        (r"/v1/chat/template", ChatTemplateHandler, args),
        (r"/tokenize", TokenizeHandler, args),
        (r"/detokenize", DetokenizeHandler, args),
        (r"/health", HealthHandler, args),
        (r"/ready", ReadyHandler, args),
        (r"/metrics", MetricsHandler, args),
        (r"/openapi.json", OpenAPIHandler, args),
    ]


def make_app(engine: AsyncEngine | Engine, settings: ServerSettings) -> tornado.web.Application:
    """A tornado Application serving the engine (an Engine is wrapped in an AsyncEngine). The state is
    `app.mistral_state` (its `engine` is the AsyncEngine)."""
    state = ServerState(engine, settings)
    app = tornado.web.Application(routes(state), default_handler_class=NotFoundHandler,
                                  default_handler_args={"state": state}, log_function=lambda handler: None)
    app.mistral_state = state
    return app
