"""What `mistral run` and `mistral tokenize` accept as a prompt: UTF-8 (or a usage error naming the byte),
never an empty prompt, and a hint when stdin is a terminal. A refused prompt loads nothing."""

import json
import os
import pty
import subprocess

from test_cli import RUN, assert_clean_error, mistral

NOT_LOADED = ["--model", "/not/loaded.gguf"]  # a usage error comes before any loading: exit 2, not 1


def run_bytes(*args, stdin: bytes | None = None):
    """The CLI with argv and stdin as bytes (argv bytes that are not UTF-8 reach Python as surrogates)."""
    result = subprocess.run(
        [*RUN, *args], input=stdin, capture_output=True, timeout=120, env={**os.environ, "NO_COLOR": "1"}
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    )


def test_invalid_utf8_is_a_usage_error_naming_the_offset():
    for command in ("run", "tokenize"):
        result = run_bytes(command, b"caf\xc3\xa9 \xff!", *NOT_LOADED)
        assert_clean_error(result, 2, "not valid UTF-8", "0xff", "offset 6", "--replace-invalid")
        result = run_bytes(command, "-", *NOT_LOADED, stdin=b"ok\n\xfe\xfe")
        assert_clean_error(result, 2, "not valid UTF-8", "0xfe", "offset 3")


def test_replace_invalid_turns_bad_bytes_into_replacement_characters(smollm2_path):
    m = ["--model", str(smollm2_path)]
    replaced = json.loads(run_bytes("tokenize", b"a\xffb", *m, "--replace-invalid", "--json").stdout)
    assert "".join(replaced["pieces"]) == "a\ufffdb"
    from_stdin = json.loads(run_bytes("tokenize", "-", *m, "--replace-invalid", "--json", stdin=b"a\xffb").stdout)
    assert from_stdin == replaced
    assert json.loads(mistral("tokenize", "a\ufffdb", *m, "--json").stdout) == replaced
    assert "--replace-invalid" in mistral("run", "--help").stdout


def test_empty_prompt_is_a_usage_error():
    assert_clean_error(mistral("run", "", *NOT_LOADED), 2, "PROMPT", "empty")
    assert_clean_error(mistral("run", " \n\t", *NOT_LOADED), 2, "PROMPT", "whitespace", "--raw")
    assert_clean_error(mistral("run", "-", *NOT_LOADED, stdin=""), 2, "PROMPT", "empty")
    assert_clean_error(mistral("run", "--raw", "", *NOT_LOADED), 2, "PROMPT", "empty")
    # --raw sends text as is: whitespace is text to continue, so it goes on to load the model
    assert_clean_error(mistral("run", "--raw", " ", *NOT_LOADED), 1, "/not/loaded.gguf")


def test_stdin_on_a_terminal_says_how_to_end_it():
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*RUN, "run", "-", *NOT_LOADED],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1"},
        )
        os.write(controller, b"hello\n\x04")
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert "stdin until Ctrl-D" in err.decode()
    assert proc.returncode == 1  # then the prompt was read, and the model is not there
    assert "stdin until" not in mistral("run", "-", *NOT_LOADED, stdin="hi").stderr
