"""The `mistral` command as a user runs it: a subprocess, stdout for the answer, exit codes."""

import json
import os
import statistics
import struct
import subprocess
import sys

import numpy as np
import pytest

RUN = [sys.executable, "-m", "mistralcli"]
QUESTION = "What is the capital of France?"


def mistral(*args, stdin=None, env=None, timeout=300):
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([*RUN, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=full_env)


def assert_clean_error(result, code, *needles):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    # rich's error box wraps long lines (a long temporary path): read it as one line
    flat = " ".join(line.strip("│╭╮╰╯─ ") for line in result.stderr.splitlines())
    for needle in needles:
        assert needle in result.stderr or needle in flat, result.stderr


def test_help_and_version_import_nothing_heavy():
    code = "import sys, mistralcli.cli; print([m for m in ('numpy', 'numba', 'gguf', 'tokenizers', 'torch') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    result = mistral("--help")
    assert result.returncode == 0 and "run" in result.stdout and "Example" in result.stdout
    result = mistral("--version")
    assert result.returncode == 0 and result.stdout.startswith("mistral 0.")
    result = mistral("run", "--help")
    assert result.returncode == 0 and "--max-tokens" in result.stdout and "Example" in result.stdout


def test_run_json_answers_paris(smollm2_path):
    result = mistral("run", QUESTION, "--model", str(smollm2_path), "--temperature", "0", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert "Paris" in out["text"]
    assert out["finish_reason"] == "stop"
    usage = out["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert set(out["timings"]) == {"load_s", "prompt_s", "generation_s", "prompt_tok_s", "generation_tok_s"}
    assert out["timings"]["generation_tok_s"] > 0


def test_run_with_a_float16_kv_cache_answers_paris(smollm2_path):
    result = mistral("run", QUESTION, "--model", str(smollm2_path), "--temperature", "0", "--kv-cache-dtype", "f16")
    assert result.returncode == 0 and "Paris" in result.stdout, result.stderr


def test_streamed_stdout_is_the_answer_only(smollm2_path):
    common = ["--model", str(smollm2_path), "--temperature", "0", "-n", "20"]
    streamed = mistral("run", QUESTION, *common)
    as_json = json.loads(mistral("run", QUESTION, *common, "--json").stdout)
    assert streamed.returncode == 0
    assert streamed.stdout == as_json["text"] + "\n"


def test_prompt_from_stdin_and_seeded_sampling(smollm2_path):
    common = ["--model", str(smollm2_path), "--seed", "7", "--temperature", "1.0", "-n", "16", "--json"]
    a = json.loads(mistral("run", "-", *common, stdin="Tell me a story.").stdout)
    b = json.loads(mistral("run", "Tell me a story.", *common).stdout)
    assert a["text"] == b["text"] and a["usage"] == b["usage"]


def test_raw_prompt_parses_special_tokens(smollm2_path):
    from mistralcli.loading.loader import load_model

    loaded = load_model(str(smollm2_path))
    rendered = loaded.chat_template.render([{"role": "user", "content": QUESTION}])
    common = ["--model", str(smollm2_path), "--temperature", "0", "-n", "12", "--json"]
    raw = json.loads(mistral("run", "--raw", rendered, *common).stdout)
    chat = json.loads(mistral("run", QUESTION, *common).stdout)
    assert raw["text"] == chat["text"]
    assert raw["usage"]["prompt_tokens"] == chat["usage"]["prompt_tokens"]


def test_max_tokens_gives_finish_reason_length(smollm2_path):
    out = json.loads(mistral("run", "Count to one hundred.", "--model", str(smollm2_path), "-n", "3", "--json").stdout)
    assert out["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 3


def test_usage_errors_exit_2():
    assert_clean_error(mistral("run", "hi", "--no-such-flag"), 2, "No such option")
    assert_clean_error(mistral("run", "hi", "--top-k", "-1"), 2, "--top-k")
    assert_clean_error(mistral("run", "hi", "--top-p", "0", "--model", "/not/loaded"), 2, "top_p")
    assert_clean_error(mistral("run"), 2, "PROMPT")
    assert_clean_error(mistral("frobnicate"), 2)


def test_missing_model_is_one_line_error():
    result = mistral("run", "hi", "--model", "/no/such/model.gguf")
    assert_clean_error(result, 1, "/no/such/model.gguf")
    assert len(result.stderr.strip().splitlines()) == 1


def test_broken_model_files_name_the_file(tmp_path, smollm2_path):
    truncated = tmp_path / "truncated.gguf"
    with open(smollm2_path, "rb") as f:
        truncated.write_bytes(f.read(20_000_000))
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    for path, problem in [(truncated, "truncated"), (garbage, "not a GGUF file")]:
        result = mistral("run", "hi", "--model", str(path))
        assert_clean_error(result, 1, str(path), problem)
        assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_architecture(tmp_path):
    import gguf

    path = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(str(path), "alien")
    writer.add_tensor("w", np.zeros((2, 2), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_clean_error(mistral("run", "hi", "--model", str(path)), 1, str(path), "unsupported architecture 'alien'")


def test_tokenize_and_detokenize(smollm2_path):
    m = ["--model", str(smollm2_path)]
    result = mistral("tokenize", "Hello world!", *m)
    assert result.returncode == 0 and result.stdout.split() == ["19556", "905", "17"]
    out = json.loads(mistral("tokenize", "<|im_start|>Hi", *m, "--json").stdout)
    assert out["ids"][0] == 1 and out["pieces"][0] == "<|im_start|>" and "".join(out["pieces"]) == "<|im_start|>Hi"
    assert mistral("tokenize", "-", *m, stdin="Hello world!").stdout.split() == ["19556", "905", "17"]
    assert mistral("detokenize", "19556", "905", "17", *m).stdout == "Hello world!\n"
    assert_clean_error(mistral("detokenize", "99999999", *m), 2, "99999999")


def test_closed_pipe_is_not_an_error(smollm2_path):
    import shlex

    command = f"set -o pipefail; {shlex.join(RUN)} run 'Write a long poem.' --model {shlex.quote(str(smollm2_path))} -n 300 | head -c 5"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 5 and "Traceback" not in result.stderr


def piped(args: list[str], reader: str, stdin: str | None = None):
    """`mistral ARGS | READER` under pipefail: the pipeline's status is mistral's unless the reader fails."""
    import shlex

    command = f"set -o pipefail; {shlex.join([*RUN, *args])} | {reader}"
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(["bash", "-c", command], input=stdin, capture_output=True, text=True, timeout=300, env=env)


def test_closed_pipe_is_not_an_error_with_json(smollm2_path):
    run = ["run", "Write a long poem.", "--model", str(smollm2_path), "-n", "40"]
    for attempt in range(3):  # the reader leaves while the answer is written: about 1 run in 3 failed
        result = piped([*run, "--json"], "head -c 10")
        assert (result.returncode, result.stderr, len(result.stdout)) == (0, "", 10), attempt
    for args in ([*run, "--json"], run):  # a reader gone before anything is written (at exit, buffered)
        result = piped(args, "true")
        assert (result.returncode, result.stderr) == (0, ""), args


def test_closed_pipe_is_not_an_error_for_tokenize(smollm2_path):
    m = ["--model", str(smollm2_path)]
    long_text = "The quick brown fox jumps over the lazy dog. " * 3000  # a JSON answer far past a pipe's 64 KiB
    for args in (["tokenize", "-", *m, "--json"], ["tokenize", "-", *m]):
        result = piped(args, "head -c 10", stdin=long_text)
        assert (result.returncode, result.stderr, len(result.stdout)) == (0, "", 10), args
    result = piped(["detokenize", "19556", "905", *m], "true")
    assert (result.returncode, result.stderr) == (0, "")


@pytest.fixture(scope="session")
def small_context_path(tmp_path_factory, smollm2_path):
    """SmolLM2 with a 256-token context: its GGUF copied with llama.context_length rewritten in place."""
    key = b"llama.context_length"
    path = tmp_path_factory.mktemp("small-context") / "SmolLM2-ctx256.gguf"
    data = bytearray(smollm2_path.read_bytes())
    at = data.index(key, 0, 1 << 20) + len(key)  # then the value's type (uint32: 4) and the uint32 value
    assert struct.unpack_from("<II", data, at) == (4, 8192)
    struct.pack_into("<I", data, at + 4, 256)
    path.write_bytes(data)
    return path


def test_max_tokens_past_the_context_is_clamped_with_one_warning(small_context_path):
    result = mistral("run", "Hi", "--model", str(small_context_path), "-n", "100000", "--json", "--ignore-eos")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["finish_reason"] == "length"
    assert out["usage"]["total_tokens"] == 256
    lines = result.stderr.strip().splitlines()  # stderr is not a terminal: no progress either
    assert len(lines) == 1 and lines[0].startswith("warning: --max-tokens 100000") and "256" in lines[0], lines
    within = mistral("run", "Hi", "--model", str(small_context_path), "-n", "5", "--json")
    assert within.returncode == 0 and within.stderr == ""


def test_long_generation_shows_progress_on_a_terminal(monkeypatch):
    import io

    from rich.console import Console

    from mistralcli.commands.run import GenerationProgress

    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=100)
    with GenerationProgress(console, 200) as progress:
        progress.update(3)  # under a second: nothing yet
        assert console.file.getvalue() == ""
        progress.start -= 2.0
        progress.update(50)
    shown = console.file.getvalue()  # drawn, then erased when the generation ends
    assert "Generating" in shown and "50/200 tokens" in shown


def test_bench_json(smollm2_path):
    result = mistral(
        "bench", "--model", str(smollm2_path), "-p", "8,16", "-n", "4", "-r", "2", "--json", "--threads", "1"
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    ours = out["engines"]["mistralcli"]
    assert set(ours["prefill_tok_s"]) == {"8", "16"}
    for figure in (ours["prefill_tok_s"]["8"], ours["decode_tok_s"], ours["ttft_s"]):
        assert len(figure["values"]) == 2 and figure["min"] <= figure["median"] <= figure["max"] and figure["min"] > 0
    assert 0 < ours["peak_rss_mib"] and out["machine"]["memory_bandwidth_gb_s"] > 0
    assert 90e6 < out["decode_bytes_per_token"] < out["model_bytes"]
    assert out["decode_roofline_fraction"] == ours["decode_tok_s"]["median"] / out["decode_roofline_tok_s"]
    assert_clean_error(mistral("bench", "-p", "12,x"), 2, "comma-separated")
    assert_clean_error(mistral("bench", "--compare", "vllm"), 2, "unknown peer")


def test_bench_concurrency_json(smollm2_path):
    result = mistral("bench", "--model", str(smollm2_path), "-c", "1,3", "-p", "16", "-n", "5", "-r", "1", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    figures = out["engines"]["mistralcli"]["concurrency"]
    assert set(figures) == {"1", "3"} and out["settings"]["concurrency"] == [1, 3]
    for n, f in figures.items():
        assert f["errors"] == 0 and f["aggregate_tok_s"]["median"] > 0 and f["per_stream_tok_s"]["median"] > 0
        assert f["ttft_s"]["count"] == int(n) and f["itl_s"]["count"] == 4 * int(n)  # 5 tokens: 4 gaps each
        assert 0 < f["ttft_s"]["p50"] <= f["ttft_s"]["p95"] and 0 <= f["engine_overhead_fraction"] < 1
    assert_clean_error(mistral("bench", "-c", "0"), 2, ">= 1")
    assert_clean_error(mistral("bench", "-c", "2", "--compare", "llama-cpp"), 2, "not with --concurrency")


def test_bench_structured_measures_the_same_requests_free_and_constrained(smollm2_path):
    args = ("bench", "--model", str(smollm2_path), "-c", "1,2", "-p", "16", "-n", "6", "-r", "1", "--json")
    result = mistral(*args, "--structured")
    assert result.returncode == 0, result.stderr
    engine = json.loads(result.stdout)["engines"]["mistralcli"]
    structured = engine["structured"]
    assert structured["schema"]["type"] == "array" and set(structured["cost"]) == {"1", "2"}
    assert structured["free"] == engine["concurrency"]
    for n, f in structured["structured"].items():
        assert f["errors"] == 0 and f["itl_s"]["count"] == 5 * int(n)  # all 6 tokens: the schema outlasts -n
        free = structured["free"][n]["aggregate_tok_s"]["values"]
        ratios = [c / r for c, r in zip(f["aggregate_tok_s"]["values"], free, strict=True)]
        assert structured["cost"][n] == pytest.approx(1 - statistics.median(ratios))
    assert_clean_error(mistral("bench", "--structured"), 2, "needs --concurrency")
    assert_clean_error(mistral(*args, "--json-schema", '{"type": "bogus"}'), 2, "--json-schema", "bogus")


def test_bench_compare_llama_cpp(smollm2_path):
    import importlib.util

    args = ("bench", "--model", str(smollm2_path), "-p", "16", "-n", "4", "-r", "1", "--compare", "llama-cpp", "--json")
    result = mistral(*args)
    if importlib.util.find_spec("llama_cpp") is None:
        assert_clean_error(result, 1, "pip install llama-cpp-python")
        return
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    peer = out["engines"]["llama.cpp"]
    assert set(peer) == set(out["engines"]["mistralcli"])  # one schema for every engine
    assert peer["decode_tok_s"]["median"] > 0
    assert set(out["ratios_vs_llama_cpp"]) == {"prefill_16", "decode", "ttft", "load", "peak_rss"}


def test_run_stop_strings_and_dry(smollm2_path):
    counting = mistral(
        "run",
        "--raw",
        "1, 2, 3, 4,",
        "--model",
        str(smollm2_path),
        "--temperature",
        "0",
        "-n",
        "30",
        "--stop",
        " 9",
        "--stop",
        "never",
        "--json",
    )
    assert counting.returncode == 0, counting.stderr
    out = json.loads(counting.stdout)
    assert out["text"] == " 5, 6, 7, 8," and out["finish_reason"] == "stop"
    loop = (
        "run",
        "--raw",
        "1, 2, 3, 1, 2, 3, 1, 2, 3,",
        "--model",
        str(smollm2_path),
        "--temperature",
        "0",
        "-n",
        "10",
        "--ignore-eos",
        "--json",
    )
    plain, dry = mistral(*loop), mistral(*loop, "--dry-multiplier", "0.8")
    assert json.loads(plain.stdout)["text"].startswith(" 1, 2, 3")
    assert not json.loads(dry.stdout)["text"].startswith(" 1, 2, 3")


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_run_constrained_stdout_is_exactly_the_constrained_text(smollm2_path, tmp_path):
    import jsonschema

    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON_SCHEMA))
    lark = tmp_path / "answer.lark"
    lark.write_text('start: "Answer: " ("yes" | "no")\n')
    model = ("--model", str(smollm2_path), "--temperature", "1", "--seed", "3")
    result = mistral("run", "A person", "--json-schema", str(schema), *model)
    assert result.returncode == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout), PERSON_SCHEMA)
    assert not result.stdout.endswith("\n")  # exactly the JSON text: `| jq` reads it as is
    inline = mistral("run", "A person", "--json-schema", json.dumps(PERSON_SCHEMA), *model)
    assert inline.stdout == result.stdout
    assert json.loads(mistral("run", "A thing", "--json-object", *model).stdout).__class__ is dict
    assert mistral("run", "Code", "--regex", "[A-Z]{2}[0-9]{2}", *model).stdout.__len__() == 4
    assert mistral("run", "Sky blue?", "--grammar", str(lark), *model).stdout in ("Answer: yes", "Answer: no")
    short = mistral("run", "A person", "--json-schema", str(schema), "-n", "3", "--json", *model)
    assert_clean_error(short, 1, "before it completed the json constraint")
    assert json.loads(short.stdout)["grammar_complete"] is False


def test_run_constraint_errors_are_usage_errors_before_loading(tmp_path):
    missing = tmp_path / "none.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad_lark = tmp_path / "g.lark"
    bad_lark.write_text("start: undefined_rule\n")
    model = ("--model", str(tmp_path / "no-such-model.gguf"))  # never loaded: the flags are refused first
    for args, needles in [
        (("--json-schema", str(missing)), ["--json-schema", "none.json", "No such file"]),
        (("--json-schema", str(broken)), ["--json-schema", "broken.json", "not JSON"]),
        (("--json-schema", '{"type": "object", "if": {}}'), ["--json-schema", '"if"']),
        (("--regex", "(a"), ["--regex", "unclosed group"]),
        (("--grammar", str(bad_lark)), ["--grammar", "undefined_rule"]),
        (("--regex", "a", "--json-object"), ["give one constraint"]),
    ]:
        assert_clean_error(mistral("run", "hi", *args, *model), 2, *needles)


def test_run_with_a_thinking_model_keeps_the_thought_off_stdout(tmp_path, smollm2_path):
    from tiny_models import QWEN3_CHAT_TEMPLATE, make_hf_model, save_byte_level_tokenizer

    make_hf_model("qwen3", head_dim=32).save_pretrained(tmp_path)
    save_byte_level_tokenizer(tmp_path, QWEN3_CHAT_TEMPLATE)
    model = ("--model", str(tmp_path), "--temperature", "1", "-n", "40")
    thought = 0
    for seed in range(1, 6):
        result = mistral("run", "hi", *model, "--seed", str(seed), "--thinking-budget", "4", "--json-object", "--json")
        out = json.loads(result.stdout)
        assert "reasoning" in out, out
        if out["grammar_complete"]:  # the random model may spend -n on a long object: then it is said so
            assert isinstance(json.loads(out["text"]), dict) and result.returncode == 0
        else:
            assert out["finish_reason"] == "length" and result.returncode == 1
        thought += out["reasoning"] is not None
        plain = mistral("run", "hi", *model, "--seed", str(seed), "--thinking-budget", "4", "--json-object")
        assert plain.stdout == out["text"]  # stdout: the answer alone, the thought is elsewhere
    assert thought > 0
    on = json.loads(mistral("run", "hi", *model, "--think", "--json", "-n", "1").stdout)
    off = json.loads(mistral("run", "hi", *model, "--no-think", "--json", "-n", "1").stdout)
    assert off["usage"]["prompt_tokens"] > on["usage"]["prompt_tokens"]  # the empty <think></think> block
    refused = mistral("run", "hi", "--model", str(smollm2_path), "--thinking-budget", "4")
    assert_clean_error(refused, 2, "does not think")
