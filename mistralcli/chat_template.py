"""Chat templates: Jinja2 in a sandbox, rendered the way transformers' apply_chat_template does."""

import json
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mistralcli.errors import MistralError


class ChatTemplateError(MistralError):
    """The template refused the conversation (raise_exception) or could not be rendered."""


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' tojson: unlike Jinja's built-in it keeps non-ASCII text and does not escape HTML.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def _with_argument_objects(message: dict) -> dict:
    """An assistant's tool calls with their arguments as objects, as templates (and transformers) take them:
    OpenAI's messages carry them as JSON text, which `arguments | tojson` would write as one quoted string
    (as vLLM does, arguments that are not a JSON object are left as they are)."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not calls or not isinstance(calls, list):
        return message
    decoded = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):
            try:
                value = json.loads(arguments)
            except ValueError:
                value = None
            if isinstance(value, dict):
                call = {**call, "function": {**function, "arguments": value}}
        decoded.append(call)
    return {**message, "tool_calls": decoded}


class ChatTemplate:
    """A model's chat template. `render(messages, ...)` returns the prompt text."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _compile(source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"chat template has a syntax error on line {exc.lineno}: {exc.message}") from None

    def render(
        self,
        messages: list[dict],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        **template_kwargs,
    ) -> str:
        """Render a conversation; extra keyword arguments (enable_thinking=...) reach the template."""
        context = {"bos_token": self.bos_token, "eos_token": self.eos_token, **template_kwargs}
        try:
            return self._template.render(
                messages=[_with_argument_objects(m) for m in messages],
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **context,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"chat template error: {exc}") from None
