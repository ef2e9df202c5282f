"""/openapi.json: every route, with the request schemas from the pydantic models that validate them."""

from mistralcli.server import protocol

_ERROR = {
    "description": "An error in OpenAI's shape",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


def _json_body(name: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _ok(description: str, content_type: str = "application/json") -> dict:
    return {"description": description, "content": {content_type: {"schema": {"type": "object"}}}}


def openapi_document(model_name: str) -> dict:
    models = {
        "ChatCompletionRequest": protocol.ChatCompletionRequest,
        "CompletionRequest": protocol.CompletionRequest,
        "TokenizeRequest": protocol.TokenizeRequest,
        "DetokenizeRequest": protocol.DetokenizeRequest,
        "ChatTemplateRequest": protocol.ChatTemplateRequest,
    }
    schemas = {}
    for name, model in models.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas["ErrorResponse"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    }
    errors = {str(code): _ERROR for code in (400, 401, 404, 413, 429, 503)}

    def post(summary, body, ok):
        return {"post": {"summary": summary, "requestBody": _json_body(body), "responses": {"200": ok, **errors}}}

    def get(summary, ok, codes=(401, 404)):
        return {"get": {"summary": summary, "responses": {"200": ok, **{str(c): _ERROR for c in codes}}}}

    stream_ok = {
        "description": "The completion; with stream, server-sent events ending in data: [DONE]",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    paths = {
        "/v1/chat/completions": post("Chat completion (OpenAI)", "ChatCompletionRequest", stream_ok),
        "/v1/completions": post("Text completion (OpenAI)", "CompletionRequest", stream_ok),
        "/v1/models": get("The served model", _ok("A list of one model")),
        "/v1/models/{model}": {
            "get": {
                **get("One model", _ok("The model card"))["get"],
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            }
        },
        "/v1/chat/template": post(
            "Apply the chat template: text and tokens", "ChatTemplateRequest", _ok("text, tokens, token_count")
        ),
        "/tokenize": post("Token ids of a prompt or a conversation", "TokenizeRequest", _ok("tokens, count")),
        "/detokenize": post("Text of token ids", "DetokenizeRequest", _ok("prompt")),
        "/health": get("Liveness", _ok("ok"), codes=(503,)),
        "/ready": get("Readiness: 503 while shutting down", _ok("ready"), codes=(503,)),
        "/metrics": get("Prometheus metrics", _ok("text exposition format", "text/plain"), codes=()),
        "/openapi.json": get("This document", _ok("OpenAPI 3.1"), codes=()),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mistralcli", "version": _version(), "description": f"Serving {model_name}"},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _version() -> str:
    from mistralcli import __version__

    return __version__
