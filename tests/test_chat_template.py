"""Chat templates render exactly as transformers' apply_chat_template renders them."""

import pytest

from mistralcli.chat_template import ChatTemplate, ChatTemplateError
from mistralcli.loading.gguf_file import open_gguf

# Exercises what real templates use: loop controls, tojson (non-ASCII kept), tools, kwargs,
# raise_exception, bos/eos tokens, add_generation_prompt and whitespace control.
TEMPLATE = """{{ bos_token }}
{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>
{% endif %}
{%- for message in messages %}
  {%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}
    {{- raise_exception('unknown role: ' + message['role']) }}
  {%- endif %}
  {%- if loop.index0 > 8 %}{% break %}{% endif %}
<|{{ message['role'] }}|>{{ message['content'] | trim }}{{ eos_token }}
{% endfor %}
{%- if add_generation_prompt %}<|assistant|>{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}{% endif %}"""

MESSAGES = [
    {"role": "system", "content": "Tu es un assistant. Réponds brièvement."},
    {"role": "user", "content": "  Quelle est la capitale de la France ? 🇫🇷  "},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "Et de l'Allemagne ?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "météo",
            "description": "Le temps qu'il fait",
            "parameters": {"type": "object", "properties": {"ville": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE()), bos_token="<s>", eos_token="</s>"
    )
    tok.chat_template = TEMPLATE
    return tok


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(add_generation_prompt=True),
        dict(add_generation_prompt=False),
        dict(add_generation_prompt=True, tools=TOOLS),
        dict(add_generation_prompt=True, enable_thinking=False),
    ],
)
def test_renders_like_transformers(hf_tokenizer, kwargs):
    ours = ChatTemplate(TEMPLATE, "<s>", "</s>").render(MESSAGES, **kwargs)
    theirs = hf_tokenizer.apply_chat_template(MESSAGES, tokenize=False, **kwargs)
    assert ours == theirs
    if "tools" in kwargs:
        assert '"météo"' in ours  # tojson keeps non-ASCII text


def test_smollm2_template_like_transformers(hf_tokenizer, smollm2_path):
    source = open_gguf(smollm2_path).metadata["tokenizer.chat_template"]
    hf_tokenizer.chat_template = source
    try:
        for messages in (MESSAGES, MESSAGES[1:2]):
            ours = ChatTemplate(source, "<|im_start|>", "<|im_end|>").render(messages)
            assert ours == hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    finally:
        hf_tokenizer.chat_template = TEMPLATE
    assert ours.endswith("<|im_start|>assistant\n")


def test_raise_exception_becomes_a_clear_error():
    with pytest.raises(ChatTemplateError, match="unknown role: robot"):
        ChatTemplate(TEMPLATE).render([{"role": "robot", "content": "beep"}])


def test_syntax_error_and_sandbox():
    with pytest.raises(ChatTemplateError, match="syntax error"):
        ChatTemplate("{% for %}")
    with pytest.raises(ChatTemplateError):  # the sandbox refuses attribute tricks
        ChatTemplate("{{ messages.__class__.__mro__ }}").render([])
    with pytest.raises(ChatTemplateError):  # and mutation of the caller's data
        ChatTemplate("{{ messages.append(1) }}").render([])


def test_strftime_now():
    import datetime

    text = ChatTemplate("{{ strftime_now('%Y') }}").render([])
    assert text == str(datetime.datetime.now().year)


def test_tool_call_arguments_reach_the_template_as_objects():
    # OpenAI's messages carry a call's arguments as JSON text; templates (Qwen's, Llama's, ...) write them with
    # `| tojson`, which must give the object the model wrote, not a quoted string of it
    source = (
        "{% for m in messages %}{% for c in m.tool_calls or [] %}"
        "{{ c.function.name }}:{{ c.function.arguments | tojson }};{% endfor %}{% endfor %}"
    )
    calls = [
        {"id": "1", "type": "function", "function": {"name": "cat", "arguments": '{"path": "notes.txt"}'}},
        {"id": "2", "type": "function", "function": {"name": "odd", "arguments": "not json"}},
        {"id": "3", "type": "function", "function": {"name": "obj", "arguments": {"a": 1}}},
    ]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    text = ChatTemplate(source).render(messages, add_generation_prompt=False)
    assert text == 'cat:{"path": "notes.txt"};odd:"not json";obj:{"a": 1};'
    assert calls[0]["function"]["arguments"] == '{"path": "notes.txt"}'  # the caller's messages are not changed
