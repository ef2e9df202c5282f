"""`mistral bench --serve/--url` (the concurrency figures over HTTP) and the server's load-test script."""

import json
import subprocess
import sys

import pytest

from mistralcli.bench.http import served
from tests.test_cli import assert_clean_error, mistral

pytestmark = pytest.mark.slow

FIGURES = {"aggregate_tok_s", "per_stream_tok_s", "ttft_s", "itl_s", "errors", "engine_overhead_fraction"}


def test_bench_serve_and_url_give_the_offline_schema(smollm2_path):
    with served(str(smollm2_path), 2, 4) as (url, _):
        result = mistral(
            "bench",
            "--model",
            str(smollm2_path),
            "--serve",
            "--url",
            f"other={url}/v1",
            "-c",
            "1,2",
            "-p",
            "16",
            "-n",
            "6",
            "-r",
            "1",
            "--threads",
            "2",
            "--json",
        )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "http" and list(report["engines"]) == ["mistralcli", "other"]
    offline = json.loads(
        mistral("bench", "--model", str(smollm2_path), "-c", "1", "-p", "8", "-n", "3", "-r", "1", "--json").stdout
    )
    assert set(offline["engines"]["mistralcli"]["concurrency"]["1"]) <= set(
        report["engines"]["mistralcli"]["concurrency"]["1"]
    )
    for engine in report["engines"].values():
        assert engine["model"] == smollm2_path.stem and engine["url"].startswith("http://")
        for level, figures in engine["concurrency"].items():
            assert FIGURES <= set(figures) and figures["errors"] == 0
            assert figures["aggregate_tok_s"]["median"] > 0
            assert figures["ttft_s"]["count"] == int(level)
            assert figures["itl_s"]["count"] == 5 * int(level)  # 6 tokens, one a chunk: 5 gaps each
            assert 10 <= figures["prompt_tokens_seen"] <= 30
    assert report["engines"]["mistralcli"]["peak_rss_mib"] > 50
    assert set(report["ratios"]["other"]) == {"1", "2"} and report["ratios_relative_to"] == "mistralcli"


def test_bench_http_usage_errors():
    assert_clean_error(mistral("bench", "--url", "localhost:8000"), 2, "http://")
    assert_clean_error(mistral("bench", "--serve", "--compare", "llama-cpp"), 2, "not with --url")
    result = mistral("bench", "--url", "http://127.0.0.1:9", "-c", "1", "-n", "2", "-r", "1")
    assert_clean_error(result, 1, "cannot reach")


def test_load_test_mode_passes_on_a_short_run(smollm2_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mistralcli",
            "bench",
            "--load-test",
            "--model",
            str(smollm2_path),
            "--clients",
            "12",
            "--duration",
            "6",
            "--disconnect",
            "0.3",
            "--max-num-seqs",
            "8",
            "--threads",
            "2",
            "--json",
            "--health-p99-ms",
            "1000",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["passed"], report
    assert report["completed"] > 0 and report["disconnected"] > 0
    assert report["http_5xx"] == report["errors"] == report["hung"] == 0
    assert report["kv_blocks_used_after"] == 0 and report["running_after"] == 0
