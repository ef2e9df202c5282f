"""`mistral run --batch`: OpenAI's batch input and output formats, plain prompts (--each-line), input order,
malformed lines reported by number without stopping the rest, a resumed run skipping what is answered, and the
answers the same as `mistral run`'s (batch invariance on)."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "NO_COLOR": "1", "MISTRALCLI_BATCH_INVARIANT": "1"}
PROMPTS = ["What is the capital of France?", "Name three primary colors.", "Write a haiku about tea."]


def mistral(*args, stdin=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "mistralcli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        input=stdin,
        timeout=timeout,
    )


def request(custom_id: str, content: str, **body) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "temperature": 0, **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def answers(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        entry = json.loads(line)
        out[entry["custom_id"]] = entry
    return out


def test_each_line_answers_as_mistral_run_does_in_input_order(smollm2_path, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[0] + "\n" + PROMPTS[1] + "\n\n" + PROMPTS[2] + "\n")
    result = mistral("run", "-m", str(smollm2_path), "--batch", str(prompts), "--each-line", "-t", "0", "-n", "24")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["custom_id"] for e in lines] == ["line-1", "line-2", "line-4"]  # the blank line is skipped
    assert "3 requests in" in result.stderr and "3 answered, 0 failed" in result.stderr
    for entry, prompt in zip(lines, PROMPTS, strict=True):
        assert entry["id"].startswith("batch_req_") and entry["error"] is None
        response = entry["response"]
        assert response["status_code"] == 200 and response["request_id"] == response["body"]["id"]
        alone = json.loads(mistral("run", "-m", str(smollm2_path), prompt, "-t", "0", "-n", "24", "--json").stdout)
        assert response["body"]["choices"][0]["message"]["content"] == alone["text"]
        assert response["body"]["usage"]["completion_tokens"] == alone["usage"]["completion_tokens"]


def test_malformed_lines_are_reported_by_number_and_the_rest_answered(smollm2_path, tmp_path):
    source = tmp_path / "batch.jsonl"
    source.write_text(
        "\n".join(
            [
                request("a", "What is the capital of France?", max_tokens=12),
                json.dumps({"custom_id": "b", "method": "POST", "url": "/v1/completions",
                            "body": {"prompt": "1, 2, 3,", "max_tokens": 6, "temperature": 0}}),
                "{not json",
                request("c", "Hi", temperature=-3),
                request("a", "again"),
                json.dumps({"custom_id": "e", "method": "GET", "url": "/v1/models", "body": {}}),
            ]
        ) + "\n"
    )  # fmt: skip
    result = mistral("run", "-m", str(smollm2_path), "--batch", str(source))
    assert result.returncode == 1  # some lines failed; all were answered
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["custom_id"] for e in lines] == ["a", "b", "line-3", "c", "a", "e"]
    a, b, bad_json, c, duplicate, get = lines
    assert "Paris" in a["response"]["body"]["choices"][0]["message"]["content"]
    assert a["response"]["body"]["model"] == smollm2_path.stem  # the batch's model, whatever the body named
    assert b["response"]["body"]["object"] == "text_completion" and b["response"]["body"]["choices"][0]["text"]
    assert bad_json["response"] is None and bad_json["error"]["code"] == "invalid_json"
    assert bad_json["error"]["message"].startswith("line 3:")
    assert c["response"]["status_code"] == 400 and c["response"]["body"]["error"]["param"] == "temperature"
    assert duplicate["error"]["code"] == "duplicate_custom_id" and "line 5" in duplicate["error"]["message"]
    assert get["error"]["code"] == "invalid_line" and "method must be POST" in get["error"]["message"]
    assert "line 3: Expecting property name" in result.stderr and "line 4 (c): 400" in result.stderr


def test_a_resumed_run_skips_what_is_answered_and_writes_input_order(smollm2_path, tmp_path):
    source = tmp_path / "batch.jsonl"
    source.write_text("\n".join(request(k, p, max_tokens=8) for k, p in zip("xyz", PROMPTS, strict=True)) + "\n")
    out = tmp_path / "out.jsonl"
    kept = {"id": "batch_req_kept", "custom_id": "z", "response": {"status_code": 200, "request_id": "r",
            "body": {"marker": "from the first run"}}, "error": None}  # fmt: skip
    failed = {"id": "batch_req_503", "custom_id": "x", "response": {"status_code": 503, "request_id": None,
              "body": {"error": {"message": "the server shut down"}}}, "error": None}  # fmt: skip
    out.write_text(json.dumps(kept) + "\n" + json.dumps(failed) + "\n" + '{"custom_id": "y", "resp')  # cut short
    result = mistral("run", "-m", str(smollm2_path), "--batch", str(source), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "resuming: 1 of 3 already answered" in result.stderr and not result.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["custom_id"] for e in lines] == ["x", "y", "z"]  # input order, one line each
    assert lines[2] == kept  # not asked again
    assert lines[0]["response"]["status_code"] == 200 and lines[1]["response"]["status_code"] == 200
    again = mistral("run", "-m", str(smollm2_path), "--batch", str(source), "-o", str(out))
    assert again.returncode == 0 and "nothing to do: all 3 requests are answered" in again.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines


@pytest.mark.parametrize(
    ("args", "quoted"),
    [
        (["--each-line"], "--each-line"),
        (["-o", "out.jsonl"], "--output"),
        (["Hi", "--batch", "x.jsonl"], "give the prompts in the --batch file"),
        (["--batch", "/nonexistent/x.jsonl"], "/nonexistent/x.jsonl"),
        (["--batch", "x.jsonl", "--json-object"], "not with --batch"),
    ],
)
def test_bad_batch_flags_are_usage_errors(args, quoted, tmp_path):
    (tmp_path / "x.jsonl").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "mistralcli", "run", *args], capture_output=True, text=True, env=ENV, cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and quoted in result.stderr and "Traceback" not in result.stderr
