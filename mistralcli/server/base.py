"""What every handler of the server shares: OpenAI's error shape (APIError), the settings, the state
(engine, limiter, metrics, requests in flight), and BaseHandler (keys, body limit, CORS, logs, JSON
parsing into the pydantic models of protocol.py)."""

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import tornado.web
from pydantic import ValidationError

from mistralcli import prompt
from mistralcli.engine.async_engine import AsyncEngine
from mistralcli.engine.engine import Engine
from mistralcli.server.limits import ApiKeys, RateLimit, RateLimiter
from mistralcli.server.metrics import ServerMetrics
from mistralcli.server.model_manager import UNSET, ModelError

DEFAULT_MAX_BODY_BYTES = 4 << 20
DRAIN_FACTOR = 8  # bodies up to 8x the limit are read and dropped before the 413 (see BaseHandler.prepare)


class APIError(tornado.web.HTTPError):
    """An error answered to the client in OpenAI's shape (an HTTPError, so tornado keeps its status)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
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
    tool_call_parser: str | None = None  # a mistralcli.tools.TOOL_CALL_PARSERS name; None: the chat template's
    reasoning_parser: str | None = None  # a mistralcli.reasoning.REASONING_PARSERS name or "none"; None: the template's
    tools: Any = None  # a mistralcli.tools.loop.ToolRunner: the tools the server runs itself (the tool loop)
    max_tool_rounds: int = 10  # rounds of tool calls the server runs for one chat completion
    model_size: int = 0  # bytes, as Ollama's /api/tags lists it
    model_digest: str = ""  # an identity of the model's file (see loading.discovery.file_identity)
    embedder: Any = None  # a mistralcli.engine.embedder.Embedder: /v1/embeddings and /api/embed (None: they refuse)
    request_mcp: bool = False  # the Responses API's {"type": "mcp", "server_url"} tools: the server connects to them
    responses: Any = None  # a mistralcli.server.response_store.ResponseStore; None: the Responses API stores nothing


class ServerShared:
    """What every model of a server shares: the server's settings, the limiter, the metrics, the stored responses,
    the tools' request models, the drain flag, and the models (a ModelManager: loaded, loading, unloaded). The
    handlers hold it as `state` until they name their model (BaseHandler.use_model)."""

    def __init__(self, settings: "ServerSettings"):
        from mistralcli.server.model_manager import ModelManager

        self.settings = settings
        self.limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self.models = ModelManager(self)
        self.metrics = ServerMetrics(self.models)
        if settings.tools is not None and settings.tools.observe is None:
            settings.tools.observe = self.metrics.observe_tool_call
        self.created = int(time.time())
        self.tool_models: dict = {}  # the server's tools by name: (Tool, its protocol.Tool), see chat._tool_model
        self.responses = settings.responses
        self.responses_in_flight: dict = {}  # the Responses API's responses being generated, by id (their handlers)
        self.shutting_down = False

    def model_state(self, engine, settings: "ServerSettings") -> "ServerState":
        """A model of this server, loaded: its ServerState over these shared parts."""
        return ServerState(engine, settings, self)

    @property
    def alive(self) -> bool:
        """No loaded model's engine has failed."""
        return all(slot.state.alive for slot in self.models.loaded())


class ServerState:
    """One loaded model as the handlers see it: its engine (or embedder), tokenizer, settings (the server's, with
    this model's name, template, sampling defaults and file), and its requests in flight; the rest is the
    server's (ServerShared), reached through the same names."""

    def __init__(
        self, engine: AsyncEngine | Engine | None, settings: ServerSettings, shared: ServerShared | None = None
    ):
        """engine None: an embedding model (settings.embedder), which does not generate. Without `shared` this is
        a server of its own with this one model (make_app)."""
        from mistralcli.engine.embedder import AsyncEmbedder

        if engine is None and settings.embedder is None:
            raise ValueError("a server needs an engine, or an embedder for an embedding model")
        self.engine = engine if engine is None or isinstance(engine, AsyncEngine) else AsyncEngine(engine)
        self.settings = settings
        self.embedder = AsyncEmbedder(settings.embedder) if settings.embedder is not None else None
        source = self.engine if self.engine is not None else settings.embedder
        self.model = source.model if self.engine is None else self.engine.engine.model
        self.tokenizer = source.tokenizer
        self.context_length = self.engine.context_length if self.engine is not None else source.config.max_length
        self.in_flight: set[str] = set()  # request ids being served
        if shared is None:
            shared = ServerShared(settings)
            shared.models.add(settings.model_name, state=self)
        self.shared = shared

    limiter = property(lambda self: self.shared.limiter)
    metrics = property(lambda self: self.shared.metrics)
    created = property(lambda self: self.shared.created)
    tool_models = property(lambda self: self.shared.tool_models)
    responses = property(lambda self: self.shared.responses)
    responses_in_flight = property(lambda self: self.shared.responses_in_flight)
    shutting_down = property(lambda self: self.shared.shutting_down)
    models = property(lambda self: self.shared.models)

    @property
    def alive(self) -> bool:
        return self.engine.is_alive if self.engine is not None else self.embedder.thread.is_alive()

    def shutdown(self) -> None:
        """Stop the engine's thread (and the embedder's): the model is unloaded."""
        if self.engine is not None:
            self.engine.shutdown()
        if self.embedder is not None:
            self.embedder.shutdown()


def invalid(exc: ValidationError, prefix: str = "", renamed: dict | None = None) -> APIError:
    """A pydantic error as a 400 naming the field (its first error): prefix goes before the field's path, and
    renamed maps a path to the name the client knows it by (a protocol translated into another)."""
    first = exc.errors()[0]
    parts = [str(p) for p in first["loc"] if not str(p).startswith(("function-after", "list[", "str", "int"))]
    param = prefix + ".".join(parts)
    for ours, theirs in (renamed or {}).items():
        if param == ours or param.startswith(ours + "."):
            param = theirs + param[len(ours) :]
    message = first["msg"].removeprefix("Value error, ")
    return APIError(400, f"{param}: {message}" if param else message, param=param or None, code="invalid_value")


# ---- the handlers' common part --------------------------------------------------------------------
@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """The body streams in (prepare runs on the headers), so a body announced too large gets the 413 in
    OpenAI's shape before it is read; one that turns out too large is dropped as it arrives."""

    route = ""
    needs_key = True

    def initialize(self, state: "ServerShared | ServerState"):
        self.state = state  # the server's ServerShared until use_model makes it the request's model's ServerState
        self.held_model: str | None = None  # the model this request holds (released when it ends)
        self.chunks: list[bytes] = []
        self.received = 0
        self.in_method = False  # set by `body`: the handler method runs, the body is all in
        self.key = None
        self.usage = None  # (prompt, completion) tokens, for the logs
        self.reserved_tokens = 0  # taken from the rate limit at admission (a generation settles it at its end)
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
            self.set_header(
                "Access-Control-Expose-Headers",
                "x-request-id, x-ratelimit-limit-requests, "
                "x-ratelimit-remaining-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, "
                "retry-after",
            )

    def prepare(self):
        self.started = time.perf_counter()
        if self.request.method == "OPTIONS":
            return
        if self.needs_key and self.state.settings.api_keys:
            headers = self.request.headers
            self.key = self.state.settings.api_keys.check(headers.get("Authorization"), headers.get("x-api-key"))
            if self.key is None:
                raise APIError(
                    401,
                    "a valid API key is required: send 'Authorization: Bearer KEY' (or 'x-api-key: KEY')",
                    "authentication_error",
                    code="invalid_api_key",
                )
        # A body over the limit is read and dropped, and the handler answers 413 when it asks for it:
        # answered before the body is read, a client still sending it would see the connection reset.
        # Past DRAIN_FACTOR times the limit it is answered at once, and the connection closed.
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > DRAIN_FACTOR * self.state.settings.max_body_bytes:
            self._too_large()

    def data_received(self, chunk: bytes):
        self.received += len(chunk)
        if self.received <= self.state.settings.max_body_bytes:
            self.chunks.append(chunk)
        else:
            self.chunks.clear()

    def _body_unread(self) -> bool:
        """Whether part of the request body has not arrived (a chunked body counts as unread until the
        handler method runs, which tornado calls once the body is in)."""
        if self.in_method:
            return False
        if "Transfer-Encoding" in self.request.headers:
            return True
        length = self.request.headers.get("Content-Length")
        return bool(length and length.isdigit() and self.received < int(length))

    def _too_large(self):
        raise APIError(
            413, f"the request body is larger than {self.state.settings.max_body_bytes} bytes", code="request_too_large"
        )

    @property
    def body(self) -> bytes:
        self.in_method = True
        if self.received > self.state.settings.max_body_bytes:
            self._too_large()
        return b"".join(self.chunks)

    def options(self, *args):  # CORS preflight
        self.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
        self.set_header(
            "Access-Control-Allow-Headers", "Authorization, Content-Type, x-api-key, anthropic-version, anthropic-beta"
        )
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
        if self._body_unread():  # answered early (413, 401, 404): tornado closes the connection; say so
            self.set_header("Connection", "close")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.error_body(error)))

    def error_body(self, error: APIError) -> dict:
        """An error as this handler's protocol shapes it (here OpenAI's)."""
        return error.body()

    def log_exception(self, typ, value, tb):
        if isinstance(value, APIError):
            return  # the client's mistake, answered in the body
        super().log_exception(typ, value, tb)

    def on_finish(self):
        model = self.held_model
        self._release_model()
        seconds = time.perf_counter() - getattr(self, "started", time.perf_counter())
        status = self.get_status()
        self.state.metrics.observe(self.route or "other", status, seconds, model)
        log = self.state.settings.access_log
        usage = f" {self.usage[0]}+{self.usage[1]} tok" if self.usage else ""
        if log is not None:
            print(
                f"{self.request.method} {self.request.path} {status}{usage} {seconds * 1000:.0f} ms",
                file=log,
                flush=True,
            )
        record_log = self.state.settings.request_log
        if record_log is not None:
            record = {
                "time": time.time(),
                "method": self.request.method,
                "path": self.request.path,
                "status": status,
                "latency_s": round(seconds, 6),
                "usage": {"prompt_tokens": self.usage[0], "completion_tokens": self.usage[1]} if self.usage else None,
                **self.log_record,
            }
            record_log.write(json.dumps(record, ensure_ascii=False) + "\n")
            record_log.flush()

    # ---- helpers
    def parse(self, model_cls):
        """The JSON body as model_cls, or a 400 naming the field that is wrong."""
        try:  # whatever the Content-Type says (curl -d sends a form's), as llama.cpp and vLLM do
            body = json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object", code="invalid_json")
        self.log_record["request"] = body
        try:
            return model_cls.model_validate(body)
        except ValidationError as exc:
            raise invalid(exc) from None

    def _rate_key(self) -> str:
        return self.key or self.request.remote_ip or "-"

    def _take_rate_limit(self, tokens: int) -> None:
        limiter = self.state.limiter
        if limiter is None:
            return
        decision = limiter.admit(self._rate_key(), tokens)
        for name, value in decision.headers.items():
            self.set_header(name, value)
        if not decision.allowed:
            headers = dict(decision.headers)
            if decision.retry_after:
                headers["Retry-After"] = str(max(1, int(decision.retry_after + 0.999)))
            raise APIError(429, decision.message, "rate_limit_error", code="rate_limit_exceeded", headers=headers)
        self.reserved_tokens = tokens

    def require_engine(self) -> None:
        """Generation needs the engine: a server of an embedding model (an encoder) has none."""
        if self.state.engine is None:
            message = "this model embeds and does not generate: use /v1/embeddings (or /api/embed)"
            raise APIError(400, message, param="model", code="model_not_generative")

    async def use_model(self, name: str | None, keep_alive=UNSET) -> None:
        """The model the request names (none: the server's first) becomes `self.state`, loaded first if it is not
        (the request waits); the request holds it until it ends. A name not served is a 404."""
        if self.held_model is not None:
            return
        try:
            state = await self.state.models.acquire(name, keep_alive)
        except LookupError:
            raise self.model_not_found(name) from None
        except ModelError as exc:
            headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
            raise APIError(exc.status, str(exc), "server_error", code=exc.code, headers=headers) from None
        self.state, self.held_model = state, state.settings.model_name

    def model_not_found(self, name: str) -> APIError:
        served = ", ".join(repr(n) for n in self.state.models.names())
        message = f"the model {name!r} does not exist; this server serves {served}"
        return APIError(404, message, param="model", code="model_not_found")

    def _release_model(self) -> None:
        if self.held_model is not None:
            self.state.models.release(self.held_model)
            self.held_model = None

    def on_connection_close(self):
        self._release_model()
        super().on_connection_close()

    def write_json(self, obj, status: int = 200):
        self.set_status(status)
        self.finish(json.dumps(obj, ensure_ascii=False))

    def render_chat(self, messages: list[dict], tools, add_generation_prompt: bool, kwargs: dict | None) -> str:
        template = self.state.settings.chat_template
        if template is None:
            raise APIError(
                400,
                "this model has no chat template: use /v1/completions with plain text",
                param="messages",
                code="no_chat_template",
            )
        tool_dicts = [t.model_dump(exclude_none=True) for t in tools] if tools else None
        try:
            return prompt.render_chat(template, messages, tool_dicts, add_generation_prompt, kwargs)
        except prompt.PromptError as exc:
            raise APIError(400, str(exc), param="messages", code="chat_template_error") from None

    def encode_rendered(self, text: str) -> list[int]:
        return prompt.encode_prompt(self.state.tokenizer, text)
