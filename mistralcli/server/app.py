"""The OpenAI-compatible HTTP server: tornado handlers over an AsyncEngine.

`make_app(engine, settings)` returns a tornado Application; `routes(state)` gives the handlers alone,
to mount in an application of one's own. Every error a client can cause is answered in OpenAI's
shape, `{"error": {"message", "type", "param", "code"}}`, and nothing is queued for it. The event loop
never computes: the engine steps in its own thread (AsyncEngine) and the kernels release the GIL.
"""

import tornado.web

from mistralcli.engine.async_engine import AsyncEngine
from mistralcli.engine.engine import Engine
from mistralcli.server import protocol
from mistralcli.server.anthropic import CountTokensHandler, MessagesHandler
from mistralcli.server.base import (
    DEFAULT_MAX_BODY_BYTES,
    APIError,
    BaseHandler,
    ServerSettings,
    ServerShared,
    ServerState,
)
from mistralcli.server.chat import ChatCompletionsHandler
from mistralcli.server.completions import CompletionsHandler
from mistralcli.server.embeddings import EmbeddingsHandler
from mistralcli.server.ollama import (
    OllamaChatHandler,
    OllamaEmbeddingsHandler,
    OllamaEmbedHandler,
    OllamaGenerateHandler,
)
from mistralcli.server.ollama_models import PsHandler, ShowHandler, TagsHandler, VersionHandler
from mistralcli.server.responses import ResponsesHandler
from mistralcli.server.stored_responses import StoredResponseHandler

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "APIError",
    "ServerSettings",
    "ServerShared",
    "ServerState",
    "make_app",
    "routes",
    "serve_models",
]


class ModelsHandler(BaseHandler):
    """Every model the server serves, with its state (loaded, loading, unloaded): a request naming one that is not
    loaded loads it."""

    route = "/v1/models"

    def _card(self, slot) -> dict:
        card = {
            "id": slot.name,
            "object": "model",
            "created": self.state.created,
            "owned_by": "mistralcli",
            "status": slot.status,
        }
        if slot.status == "loaded":
            card["max_model_len"] = slot.state.context_length
        return card

    def get(self, model_id: str | None = None):
        models = self.state.models
        if model_id is None:
            self.write_json({"object": "list", "data": [self._card(s) for s in models.slots.values()]})
            return
        slot = models.find(model_id)
        if slot is None:
            raise self.model_not_found(model_id)
        self.write_json(self._card(slot))


class LoadedModelsHandler(BaseHandler):
    """GET /v1/ps: the models loaded (as `mistral ps` shows them): memory, KV pool, requests, idle time, when the
    keep-alive unloads each; and the server's limits."""

    route = "/v1/ps"

    def get(self):
        models = self.state.models
        self.write_json(
            {
                "object": "list",
                "data": [models.describe(s) for s in models.slots.values() if s.status != "unloaded"],
                "memory_bytes": models.used_memory(),
                "memory_budget_bytes": models.memory_budget,
                "max_loaded": models.max_loaded,
            }
        )


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
            raise APIError(
                503,
                "not ready: " + ("shutting down" if self.state.shutting_down else "the engine has stopped"),
                "server_error",
                code="not_ready",
            )
        running = waiting = 0
        for slot in self.state.models.loaded():
            if slot.state.engine is not None:
                stats = slot.state.engine.stats()
                running, waiting = running + stats["running"], waiting + stats["waiting"]
        first = self.state.models.find(None)
        self.write_json(
            {
                "status": "ready",
                "model": first.name if first is not None else None,
                "models": {s.name: s.status for s in self.state.models.slots.values()},
                "running": running,
                "waiting": waiting,
            }
        )


class MetricsHandler(BaseHandler):
    route = "/metrics"
    needs_key = False

    def get(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.state.metrics.registry))


class TokenizeHandler(BaseHandler):
    route = "/tokenize"

    async def post(self):
        request = self.parse(protocol.TokenizeRequest)
        await self.use_model(request.model)
        if (request.prompt is None) == (request.messages is None):
            raise APIError(400, "give either prompt or messages", param="prompt", code="invalid_value")
        if request.messages is not None:
            text = self.render_chat(
                protocol.template_messages(request.messages),
                request.tools,
                request.add_generation_prompt,
                request.chat_template_kwargs,
            )
            tokens = self.encode_rendered(text)
        elif self.state.engine is None:  # an embedding model: the tokens it embeds
            tokens = self.state.embedder.embedder.encode([request.prompt], request.add_special_tokens)[0]
        else:
            tokens = self.state.tokenizer.encode(request.prompt, add_special=request.add_special_tokens)
        self.write_json({"tokens": tokens, "count": len(tokens), "max_model_len": self.state.context_length})


class DetokenizeHandler(BaseHandler):
    route = "/detokenize"

    async def post(self):
        request = self.parse(protocol.DetokenizeRequest)
        await self.use_model(request.model)
        bad = [t for t in request.tokens if t >= self.state.tokenizer.vocab_size]
        if bad:
            raise APIError(
                400, f"tokens: token id {bad[0]} is outside the vocabulary", param="tokens", code="invalid_value"
            )
        self.write_json({"prompt": self.state.tokenizer.decode(request.tokens, skip_special=False)})


class ChatTemplateHandler(BaseHandler):
    route = "/v1/chat/template"

    async def post(self):
        request = self.parse(protocol.ChatTemplateRequest)
        await self.use_model(request.model)
        text = self.render_chat(
            protocol.template_messages(request.messages),
            request.tools,
            request.add_generation_prompt,
            request.chat_template_kwargs,
        )
        tokens = self.encode_rendered(text)
        self.write_json({"text": text, "tokens": tokens, "token_count": len(tokens)})


class OpenAPIHandler(BaseHandler):
    route = "/openapi.json"
    needs_key = False

    def get(self):
        from mistralcli.server.openapi import openapi_document

        first = self.state.models.find(None)
        self.write_json(openapi_document(first.name if first is not None else ""))


class ApprovalsHandler(BaseHandler):
    """The dangerous tool calls waiting for a decision (serve --agent-permission ask): GET lists them, POST
    /v1/agent/approvals/{id} with {"approved": true or false} decides one."""

    route = "/v1/agent/approvals"

    def _runner(self):
        runner = self.state.settings.tools
        if runner is None:
            message = "this server runs no tools (serve --enable-agent-tools or --mcp-config)"
            raise APIError(404, message, code="not_found")
        return runner

    def get(self, approval_id: str | None = None):
        runner = self._runner()
        pending = {a.id: a.body() for a in runner.approvals.pending()}
        if approval_id is None:
            self.write_json({"object": "list", "permission": runner.permission, "data": list(pending.values())})
        elif approval_id in pending:
            self.write_json(pending[approval_id])
        else:
            raise APIError(404, f"no call waits for the approval {approval_id!r}", code="approval_not_found")

    def post(self, approval_id: str | None = None):
        runner = self._runner()
        if approval_id is None:
            raise APIError(405, "POST /v1/agent/approvals/{id} decides one approval", code="method_not_allowed")
        decision = self.parse(protocol.ApprovalDecision)
        approval = runner.approvals.decide(approval_id, decision.approved)
        if approval is None:
            message = f"no call waits for the approval {approval_id!r} (unknown, already decided, or expired)"
            raise APIError(404, message, code="approval_not_found")
        self.write_json({**approval.body(), "approved": decision.approved})


class NotFoundHandler(BaseHandler):
    route = "not_found"
    needs_key = False

    def _not_found(self, *args):  # in the method, once the body is in (answered early, a sender sees a reset)
        self.in_method = True
        raise APIError(404, f"no route {self.request.method} {self.request.path}", code="not_found")

    get = post = put = patch = delete = head = _not_found


def routes(state: ServerShared) -> list:
    """The server's handlers, to mount in a tornado Application (see make_app)."""
    args = {"state": state}
    return [
        (r"/v1/chat/completions", ChatCompletionsHandler, args),
        (r"/v1/completions", CompletionsHandler, args),
        (r"/v1/embeddings", EmbeddingsHandler, args),
        (r"/v1/messages", MessagesHandler, args),
        (r"/v1/messages/count_tokens", CountTokensHandler, args),
        (r"/v1/responses", ResponsesHandler, args),
        (r"/v1/responses/([^/]+)", StoredResponseHandler, args),
        (r"/v1/responses/([^/]+)/([^/]+)", StoredResponseHandler, args),
        (r"/v1/models", ModelsHandler, args),
        (r"/v1/models/(.+)", ModelsHandler, args),
        (r"/v1/ps", LoadedModelsHandler, args),
        (r"/v1/chat/template", ChatTemplateHandler, args),
        (r"/v1/agent/approvals", ApprovalsHandler, args),
        (r"/v1/agent/approvals/([^/]+)", ApprovalsHandler, args),
        (r"/api/chat", OllamaChatHandler, args),
        (r"/api/generate", OllamaGenerateHandler, args),
        (r"/api/embed", OllamaEmbedHandler, args),
        (r"/api/embeddings", OllamaEmbeddingsHandler, args),
        (r"/api/tags", TagsHandler, args),
        (r"/api/show", ShowHandler, args),
        (r"/api/ps", PsHandler, args),
        (r"/api/version", VersionHandler, args),
        (r"/tokenize", TokenizeHandler, args),
        (r"/detokenize", DetokenizeHandler, args),
        (r"/health", HealthHandler, args),
        (r"/ready", ReadyHandler, args),
        (r"/metrics", MetricsHandler, args),
        (r"/openapi.json", OpenAPIHandler, args),
    ]


def make_app(engine: AsyncEngine | Engine | None, settings: ServerSettings) -> tornado.web.Application:
    """A tornado Application serving the engine (an Engine is wrapped in an AsyncEngine; None for an embedding
    model, whose settings.embedder serves), named settings.model_name. `app.mistral_state` is the server's
    ServerShared: its `models` (a ModelManager) may be given more models, loaded on demand (see serve_models)."""
    return serve_models(ServerState(engine, settings).shared)


def serve_models(shared: ServerShared) -> tornado.web.Application:
    """A tornado Application serving the models of `shared.models`."""
    app = tornado.web.Application(
        routes(shared),
        default_handler_class=NotFoundHandler,
        default_handler_args={"state": shared},
        log_function=lambda handler: None,
    )
    app.mistral_state = shared
    return app
