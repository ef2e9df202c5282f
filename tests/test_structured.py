"""Structured output through the engine (SmolLM2 at temperature 1): every output matches its schema, regex
or grammar; what cannot be compiled is refused before anything is queued; a constrained request in a batch
is what it is alone, and the free requests beside it are unchanged."""

import json
import re

import jsonschema
import numpy as np
import pytest

from mistralcli import LLM, SamplingParams
from mistralcli.engine.engine import RequestError
from mistralcli.loading.loader import load_model
from mistralcli.structured import GrammarError, StructuredOutputs
from mistralcli.structured.grammars import GrammarCompiler

SEEDS = range(10)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "address"],
    "additionalProperties": False,
}
SCHEMAS = {
    "nested objects": PERSON,
    "bounded arrays of enums": {
        "type": "object",
        "properties": {
            "colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 2, "maxItems": 4}
        },
        "required": ["colors"],
        "additionalProperties": False,
    },
    "bounded numbers": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": -1.5, "maximum": 2.5},
            "count": {"type": "integer", "exclusiveMinimum": 3, "maximum": 9},
            "ok": {"type": "boolean"},
        },
        "required": ["score", "count", "ok"],
        "additionalProperties": False,
    },
    "array of objects": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 1}, "label": {"enum": ["a", "b"]}},
            "required": ["id", "label"],
            "additionalProperties": False,
        },
        "minItems": 1,
        "maxItems": 3,
    },
}


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(str(smollm2_path), max_num_seqs=16)


def _params(seed, structured, max_tokens=120, **kw):
    return SamplingParams(
        temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seed=seed, max_tokens=max_tokens, structured=structured, **kw
    )


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_output_validates_against_its_schema(llm, name):
    schema = SCHEMAS[name]
    prompts = ["Write one example as JSON:"] * len(SEEDS)
    outputs = llm.generate(prompts, [_params(s, StructuredOutputs(json=schema)) for s in SEEDS])
    for out in outputs:
        choice = out.outputs[0]
        assert choice.finish_reason == "stop" and choice.grammar_complete is True, choice
        jsonschema.validate(json.loads(choice.text), schema)


def test_regex_choice_lark_and_json_object_always_match(llm):
    lark = 'start: "The answer is " NUMBER "."\nNUMBER: /[1-9][0-9]{0,2}/'
    cases = [
        # bounded, so that it ends within max_tokens whatever the draws ([a-z]+ may run on at temperature 1)
        (
            StructuredOutputs(regex=r"[A-Z][a-z]{1,12} [0-9]{2}"),
            lambda t: re.fullmatch(r"[A-Z][a-z]{1,12} [0-9]{2}", t),
        ),
        (StructuredOutputs(choice=["yes", "no", "maybe"]), lambda t: t in ("yes", "no", "maybe")),
        (StructuredOutputs(grammar=lark), lambda t: re.fullmatch(r"The answer is [1-9][0-9]{0,2}\.", t)),
        (
            StructuredOutputs(grammar='root ::= "x" [0-9] [0-9]? "y"'),
            lambda t: re.fullmatch(r"x[0-9]{1,2}y", t),
        ),  # GBNF
        (StructuredOutputs(json_object=True), lambda t: isinstance(json.loads(t), dict)),
    ]
    for structured, check in cases:
        outputs = llm.generate(["Hello:"] * len(SEEDS), [_params(s, structured, max_tokens=200) for s in SEEDS])
        for out in outputs:
            choice = out.outputs[0]
            if structured.json_object and choice.finish_reason == "length":
                assert choice.grammar_complete is False  # a long object may not close in time: said so
                continue
            assert choice.grammar_complete is True and check(choice.text), (structured, choice)


def test_ending_before_the_grammar_accepts_is_length_and_incomplete(llm):
    [out] = llm.generate(["Person:"], [_params(0, StructuredOutputs(json=PERSON), max_tokens=4)])
    choice = out.outputs[0]
    assert choice.finish_reason == "length" and choice.grammar_complete is False
    assert len(choice.token_ids) == 4 and choice.text.startswith("{")


@pytest.mark.parametrize(
    "structured, words",
    [
        (StructuredOutputs(json={"type": "object", "if": {"type": "object"}}), ["json", "if"]),
        (StructuredOutputs(json={"type": "bogus"}), ["json", "bogus"]),
        (StructuredOutputs(json='{"type": '), ["json"]),
        (StructuredOutputs(regex="a(b"), ["regex", "unclosed group"]),
        (StructuredOutputs(grammar="start: missing_rule"), ["grammar", "missing_rule"]),
    ],
)
def test_what_does_not_compile_is_refused_and_nothing_is_queued(llm, structured, words):
    engine = llm.engine
    before = engine.stats()
    with pytest.raises(RequestError) as info:
        engine.add_request("bad", [1, 2, 3], _params(0, structured))
    assert info.value.param == "structured" and info.value.code == "invalid_grammar"
    assert all(w in str(info.value) for w in words), str(info.value)
    assert not engine.has_unfinished() and engine.stats() == before


def test_only_one_constraint_at_a_time():
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputs(json={"type": "object"}, regex="a")
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputs()
    assert SamplingParams(structured={"regex": "a+"}).structured == StructuredOutputs(regex="a+")


def test_a_mixed_batch_gives_each_request_its_result_alone(llm):
    free = [SamplingParams(temperature=1.0, seed=100 + i, max_tokens=24) for i in range(8)]
    constrained = [_params(i, StructuredOutputs(json=SCHEMAS["bounded numbers"]), max_tokens=40) for i in range(8)]
    params = [p for pair in zip(free, constrained, strict=True) for p in pair]  # 16, interleaved
    prompts = [f"Item {i}:" for i in range(16)]
    together = llm.generate(prompts, params)
    for prompt, p, out in zip(prompts, params, together, strict=True):
        [alone] = llm.generate([prompt], [p])
        assert out.outputs[0].token_ids == alone.outputs[0].token_ids


def test_n_choices_are_each_constrained(llm):
    [out] = llm.generate(["Colors:"], [_params(3, StructuredOutputs(json=SCHEMAS["bounded arrays of enums"]), n=4)])
    assert len(out.outputs) == 4
    for choice in out.outputs:
        jsonschema.validate(json.loads(choice.text), SCHEMAS["bounded arrays of enums"])
    assert len({c.text for c in out.outputs}) > 1  # the choices are sampled apart, each under its own matcher


def test_a_stop_string_rolls_the_matcher_back_to_the_text(llm):
    [out] = llm.generate(["Digits:"], [_params(1, StructuredOutputs(regex="[0-9]{3}-[0-9]{3}"), stop=["-"])])
    choice = out.outputs[0]
    assert choice.finish_reason == "stop" and re.fullmatch("[0-9]{3}", choice.text)
    assert choice.grammar_complete is False  # "123" is not yet "ddd-ddd"


# GGUF's GPT-2 BPE and SentencePiece, and a tokenizer.json (with added tokens, and more output rows than tokens)
@pytest.mark.parametrize("path_fixture", ["smollm2_path", "gemma_path", "tokenizer_json_dir"])
def test_the_grammar_tokenizer_sees_every_token_as_ours_does(request, path_fixture, tmp_path):
    if path_fixture == "tokenizer_json_dir":
        from tiny_models import QWEN3_CHAT_TEMPLATE, make_hf_model, save_byte_level_tokenizer

        make_hf_model("qwen3", head_dim=32).save_pretrained(tmp_path)
        save_byte_level_tokenizer(tmp_path, QWEN3_CHAT_TEMPLATE)
        loaded = load_model(str(tmp_path))
    else:
        loaded = load_model(str(request.getfixturevalue(path_fixture)))
    tokenizer = loaded.tokenizer
    compiler = GrammarCompiler(tokenizer, loaded.model.output.shape[0])
    lltok = compiler.lltokenizer
    assert lltok.vocab_size == loaded.model.output.shape[0]
    for token_id in range(tokenizer.vocab_size):
        if token_id in tokenizer.control_ids:
            assert lltok.is_special_token(token_id)
        elif tokenizer.token_bytes[token_id].startswith(b"\xff"):  # llguidance's marker byte: never valid UTF-8,
            assert lltok.decode_bytes([token_id]) == b""  # so no grammar's text holds it (the byte token <0xFF>)
        else:
            assert lltok.decode_bytes([token_id]) == tokenizer.token_bytes[token_id], token_id
    # the end-of-generation tokens are allowed where the grammar accepts, and only there
    matcher = compiler.matcher(StructuredOutputs(regex="ab"))
    words = np.zeros((1, (lltok.vocab_size + 31) // 32), dtype=np.int32)
    for text, eog_allowed in (("", False), ("a", False), ("ab", True)):
        if text:
            assert matcher.consume_tokens(tokenizer.encode(text[-1], add_special=False))
        words[:] = compiler.start_masks([matcher]).result()
        eog = sorted(tokenizer.eog_token_ids)
        bits = [(int(words[0, t >> 5]) >> (t & 31)) & 1 for t in eog]
        assert all(bits) if eog_allowed else not any(bits), (text, bits)


def test_grammar_errors_name_the_field():
    with pytest.raises(GrammarError) as info:
        StructuredOutputs(json="[1, 2]").to_grammar()
    assert info.value.field == "json"


def _accepts(compiler, spec, ids) -> tuple[bool, bool]:
    matcher = compiler.matcher(spec)
    return matcher.consume_tokens(ids), matcher.is_accepting()


def test_after_a_thought_the_answer_is_constrained(smollm2):
    from mistralcli.structured.spec import after_thought

    tokenizer = smollm2.tokenizer
    compiler = GrammarCompiler(tokenizer, smollm2.model.output.shape[0])
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

    def encode(text):
        return tokenizer.encode(text, add_special=False)

    inside = after_thought(StructuredOutputs(json=schema), "<think>", "</think>", starts_inside=True)
    assert _accepts(compiler, inside, encode('A is one, I think.</think>\n\n{"a": 1}')) == (True, True)
    assert _accepts(compiler, inside, encode('{"a": 1}')) == (True, False)  # still thinking: not an answer yet
    assert _accepts(compiler, inside, encode("ok</think>\n\nnot json"))[0] is False
    opened = after_thought(StructuredOutputs(json=schema), "<think>", "</think>", starts_inside=False)
    assert _accepts(compiler, opened, encode('<think>\nSure.\n</think>\n\n{"a": 2}')) == (True, True)
    assert _accepts(compiler, opened, encode('{"a": 2}')) == (True, True)  # a model may answer without thinking
    assert _accepts(compiler, opened, encode("I think"))[0] is False  # outside a thought, prose is not the answer
    # tags the tokenizer has as special tokens are matched as those tokens, never as their text
    start, end = "<filename>", "<file_sep>"
    ids = {tokenizer.tokens[i]: i for i in tokenizer.control_ids}
    special = after_thought(StructuredOutputs(regex="[0-9]+"), start, end, True, special_id=ids.get)
    assert _accepts(compiler, special, encode("hmm") + [ids[end]] + encode("42")) == (True, True)
    as_text = tokenizer.encode(f"hmm{end}42", add_special=False, parse_special=False)
    assert ids[end] not in as_text
    assert _accepts(compiler, special, as_text) == (True, False)  # the tag's text is more thought


def test_masks_filled_here_or_on_a_worker_are_the_same(smollm2):
    tokenizer = smollm2.tokenizer
    vocab = smollm2.model.output.shape[0]
    here, worker = GrammarCompiler(tokenizer, vocab, overlap=False), GrammarCompiler(tokenizer, vocab, overlap=True)
    prefixes = ["", '{"name": "Jo', '{"name": "Jo", "age": 4', '{"name": "Jo", "age": 41, "address": {']
    matchers = {}
    for compiler in (here, worker):
        matchers[compiler] = [compiler.matcher(StructuredOutputs(json=PERSON)) for _ in prefixes]
        for matcher, text in zip(matchers[compiler], prefixes, strict=True):
            assert matcher.consume_tokens(tokenizer.encode(text, add_special=False))
    a = here.start_masks(matchers[here]).result()
    b = worker.start_masks(matchers[worker]).result()
    assert a.shape == (len(prefixes), (vocab + 31) // 32) and np.array_equal(a, b)
    assert len({row.tobytes() for row in a}) == len(prefixes)  # each state allows its own tokens


def test_preempted_constrained_requests_keep_their_grammar_and_their_output(smollm2):
    """A KV cache too small for all at once: sequences are preempted and recomputed, their matchers untouched."""
    from mistralcli.engine.engine import Engine, EngineConfig

    def run(config):
        engine = Engine(smollm2.model, smollm2.tokenizer, smollm2.context_length, EngineConfig(**config))
        for i in range(6):
            prompt = smollm2.tokenizer.encode(f"Person number {i} as JSON, with details:" * 4)
            engine.add_request(str(i), prompt, _params(i, StructuredOutputs(json=PERSON), max_tokens=40))
        texts, complete = {}, {}
        while engine.has_unfinished():
            for out in engine.step():
                texts[out.request_id] = texts.get(out.request_id, "") + out.text
                if out.finished:
                    complete[out.request_id] = out.grammar_complete
        return engine, texts, complete

    tight, texts, complete = run(dict(kv_cache_mb=6, block_size=8, max_num_seqs=6))
    assert tight.scheduler.num_preemptions > 0
    _, roomy, _ = run(dict(max_num_seqs=6))
    assert texts == roomy
    for request_id, text in texts.items():
        if complete[request_id]:
            jsonschema.validate(json.loads(text), PERSON)
        else:
            assert text.startswith("{")
