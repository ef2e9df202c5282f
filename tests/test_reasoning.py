"""Reasoning parsers on scripted outputs: the whole text and every way of streaming it (each 2-way split,
char by char) give the same reasoning and content."""

import pytest
from tiny_models import QWEN3_CHAT_TEMPLATE

from mistralcli.reasoning import (
    REASONING_PARSERS,
    DeepSeekR1Parser,
    Phase,
    ThinkParser,
    prompt_ends_in_thought,
    reasoning_parser_for_template,
    split_reasoning,
)

# (output, starts_in_thought, reasoning, content); reasoning None: no thought at all.
CASES = [
    ("<think>\nLet me add.\n2+2=4\n</think>\n\nIt is **4**.", False, "Let me add.\n2+2=4\n", "It is **4**."),
    ("<think>\n\n</think>\n\nHello!", False, "", "Hello!"),  # Qwen3's /no_think, SmolLM3's no-think
    ("Hello! No thought here.", False, None, "Hello! No thought here."),
    ("\n\nHello", False, None, "\n\nHello"),  # leading newlines of an answer are the answer's
    ("<think>\nstill thinking when max_tokens hit", False, "still thinking when max_tokens hit", ""),
    ("Sure: <think>x</think> y", False, None, "Sure: <think>x</think> y"),  # text before: no thought
    ("Write <think> to open a thought.", False, None, "Write <think> to open a thought."),
    ("  \n<think>a</think>b", False, "a", "b"),  # whitespace before the opening tag
    ("<think>a < b and c </thinker> d</think>\n</think>e\n", False, "a < b and c </thinker> d", "</think>e\n"),
    ("<thi", False, None, "<thi"),  # a partial tag at the very end is text
    ("<think>abc</thi", False, "abc</thi", ""),
    ("", False, None, ""),
    # The prompt opened the thought (DeepSeek-R1 distills, Qwen3 thinking templates):
    ("Okay, 2+2.\n</think>\n\n4", True, "Okay, 2+2.\n", "4"),
    ("\nOkay.</think>4", True, "Okay.", "4"),
    ("<think>\nOkay.</think>4", True, "Okay.", "4"),  # the model repeats the prompt's <think>
    ("Okay <think> is a tag</think>4", True, "Okay <think> is a tag", "4"),
    ("never closed <", True, "never closed <", ""),
    ("</think>\n\nJust the answer.", True, "", "Just the answer."),
    ("", True, "", ""),
]


def stream(pieces, starts_in_thought):
    parser = ThinkParser(starts_in_thought)
    reasoning, content = [], []
    for piece in [*pieces, None]:
        r, c = parser.feed(piece) if piece is not None else parser.finish()
        reasoning.append(r)
        content.append(c)
    return "".join(reasoning), "".join(content), parser


@pytest.mark.parametrize("output, starts_in_thought, reasoning, content", CASES)
def test_whole_text(output, starts_in_thought, reasoning, content):
    assert split_reasoning(output, ThinkParser(starts_in_thought)) == (reasoning, content)


@pytest.mark.parametrize("output, starts_in_thought, reasoning, content", CASES)
def test_every_split_of_the_stream(output, starts_in_thought, reasoning, content):
    expected = (reasoning or "", content)
    for i in range(len(output) + 1):
        assert stream([output[:i], output[i:]], starts_in_thought)[:2] == expected, i
    got_reasoning, got_content, parser = stream(list(output), starts_in_thought)
    assert (got_reasoning, got_content) == expected
    assert parser.has_thought == (reasoning is not None)


def test_only_a_possible_tag_is_held_back():
    parser = ThinkParser()
    assert parser.feed("<thi") == ("", "")
    assert parser.feed("nk>\nStep one. Step two </th") == ("Step one. Step two ", "")
    assert parser.phase is Phase.THOUGHT
    assert parser.feed("ink>\n\nThe") == ("", "The")
    assert parser.phase is Phase.ANSWER
    assert parser.feed(" answer <") == ("", " answer <")  # after the thought nothing is held
    assert parser.finish() == ("", "")
    answer = ThinkParser()
    assert answer.feed("Hi <") == ("", "Hi <")  # an answer is decided at its first word
    inside = ThinkParser(starts_in_thought=True)
    assert inside.feed("\n\nHmm. a<b") == ("Hmm. a<b", "")  # '<b' cannot begin </think>
    assert inside.feed(" <") == (" ", "")


def test_registry_and_end_of_thought():
    assert REASONING_PARSERS == {"think": ThinkParser, "deepseek_r1": DeepSeekR1Parser}
    assert all(cls.end_of_thought_text == "</think>" for cls in REASONING_PARSERS.values())
    assert split_reasoning("Hmm.\n</think>\n\n42", DeepSeekR1Parser()) == ("Hmm.\n", "42")
    assert split_reasoning("42", DeepSeekR1Parser(starts_in_thought=False)) == (None, "42")


def test_prompt_ends_in_thought():
    assert prompt_ends_in_thought("<｜User｜>2+2?<｜Assistant｜><think>\n")  # DeepSeek-R1 distills
    assert prompt_ends_in_thought("<|im_start|>assistant\n<think>\nI began")  # a continued thought
    assert not prompt_ends_in_thought("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # enable_thinking=False
    assert not prompt_ends_in_thought("<|im_start|>assistant\n")
    old_turn = "<|im_start|>assistant\n<think>\nx\n</think>\n\ny<|im_end|>\n<|im_start|>assistant\n"
    assert not prompt_ends_in_thought(old_turn)


def test_reasoning_parser_for_template():
    assert reasoning_parser_for_template(QWEN3_CHAT_TEMPLATE) == "think"
    assert reasoning_parser_for_template("{{ '<｜Assistant｜><think>\\n' }}") == "think"  # DeepSeek-R1 style
    assert reasoning_parser_for_template("{% if enable_thinking %}/think{% endif %}") == "think"  # SmolLM3 style
    assert reasoning_parser_for_template("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert reasoning_parser_for_template(None) is None
