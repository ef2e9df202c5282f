"""Where a prompt becomes token ids, for every caller (`mistral run`, the Python API, the server): the chat
template with its tools and kwargs, and the BOS rule."""

from mistralcli.chat_template import ChatTemplate
from mistralcli.errors import MistralError
from mistralcli.tokenizer import Tokenizer


class PromptError(MistralError):
    """A conversation that cannot become a prompt: the model has no chat template, or the template refuses
    the messages (an unknown role, a missing field, ...)."""


def render_chat(
    template: ChatTemplate | None,
    messages: list[dict],
    tools: list[dict] | None = None,
    add_generation_prompt: bool = True,
    template_kwargs: dict | None = None,
) -> str:
    """The conversation as the model's chat template writes it."""
    if template is None:
        raise PromptError("this model has no chat template: send plain text instead")
    try:
        return template.render(
            messages, add_generation_prompt=add_generation_prompt, tools=tools or None, **(template_kwargs or {})
        )
    except (MistralError, TypeError) as exc:
        raise PromptError(str(exc)) from None


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of a prompt: special tokens in the text are parsed, and the BOS token is added as the
    model's metadata says, unless the text (a rendered template, say) already starts with it."""
    bos = tokenizer.bos_token
    return tokenizer.encode(text, add_special=not (bos and text.startswith(bos)))


def chat_prompt_ids(
    tokenizer: Tokenizer,
    template: ChatTemplate | None,
    messages: list[dict],
    tools: list[dict] | None = None,
    add_generation_prompt: bool = True,
    template_kwargs: dict | None = None,
) -> list[int]:
    """Token ids of a conversation: rendered by the chat template, then encoded by the BOS rule."""
    return encode_prompt(tokenizer, render_chat(template, messages, tools, add_generation_prompt, template_kwargs))
