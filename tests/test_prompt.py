"""mistralcli/prompt.py: the one place a prompt becomes token ids (run, the Python API and the server use it)."""

import pytest

from mistralcli.prompt import PromptError, chat_prompt_ids, encode_prompt, render_chat

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def test_bos_as_the_metadata_says_and_never_twice(smollm2):
    tokenizer = smollm2.tokenizer
    assert encode_prompt(tokenizer, "Hello") == tokenizer.encode("Hello", add_special=True)
    with_bos = tokenizer.bos_token + "Hello"
    assert encode_prompt(tokenizer, with_bos) == tokenizer.encode(with_bos, add_special=False)
    bos_id = tokenizer.encode(tokenizer.bos_token, add_special=False)
    assert encode_prompt(tokenizer, with_bos)[: 2 * len(bos_id)] != bos_id * 2


def test_chat_ids_are_the_rendered_template_encoded(smollm2):
    text = render_chat(smollm2.chat_template, MESSAGES)
    assert text.endswith("<|im_start|>assistant\n")
    assert chat_prompt_ids(smollm2.tokenizer, smollm2.chat_template, MESSAGES) == encode_prompt(smollm2.tokenizer, text)


def test_the_python_api_admits_prompts_here(smollm2_path):
    from mistralcli import LLM, SamplingParams

    llm = LLM(model=str(smollm2_path), kv_cache_mb=8)
    [answer] = llm.chat(MESSAGES, SamplingParams(temperature=0, max_tokens=1))
    assert answer.prompt_token_ids == chat_prompt_ids(llm.tokenizer, llm.loaded.chat_template, MESSAGES)
    [plain] = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=1))
    assert plain.prompt_token_ids == encode_prompt(llm.tokenizer, "Hello")


def test_a_conversation_the_template_refuses_is_a_prompt_error(smollm2):
    with pytest.raises(PromptError, match="chat template"):
        render_chat(None, MESSAGES)
    with pytest.raises(PromptError):
        render_chat(smollm2.chat_template, MESSAGES, template_kwargs={"messages": 3})
