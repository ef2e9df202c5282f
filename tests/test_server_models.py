"""Several models in one server (`mistral serve -m A -m B`, --models-dir): all listed with their state, each loaded
on its first request while the others keep serving, --max-loaded and --max-memory unloading the least recently used
idle one (never one with a request in flight), keep-alive expiry (the flag, and Ollama's per-request keep_alive),
`mistral ps` and /api/ps, and metrics by model."""

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.test_server import Server


@pytest.fixture(scope="module")
def models_dir(smollm2_path, tmp_path_factory):
    """Two models by name (links to the one SmolLM2 file: each loads on its own, with its own engine)."""
    directory = tmp_path_factory.mktemp("models")
    for name in ("alpha", "beta"):
        (directory / f"{name}.gguf").symlink_to(smollm2_path)
    return directory


def serve(models_dir, *args) -> Server:
    return Server(models_dir / "alpha.gguf", "-m", str(models_dir / "beta.gguf"), "--kv-cache-mb", "64", *args)


def chat(server, model: str, text: str = "Hi", max_tokens: int = 4, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra}
    if model is not None:
        body["model"] = model
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


def statuses(server) -> dict:
    return {m["id"]: m["status"] for m in httpx.get(server.url + "/v1/models").json()["data"]}


def loaded(server) -> list[str]:
    return [m["id"] for m in httpx.get(server.url + "/v1/ps").json()["data"] if m["status"] == "loaded"]


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture(scope="module")
def one_at_a_time(models_dir):
    s = serve(models_dir, "--max-loaded", "1")
    yield s
    assert s.stop() == 0


def test_both_are_listed_and_the_second_loads_on_its_first_request(one_at_a_time):
    server = one_at_a_time
    assert statuses(server) == {"alpha": "loaded", "beta": "unloaded"}
    answer = chat(server, "beta")
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "beta" and answer.json()["choices"][0]["message"]["content"]
    # --max-loaded 1: loading beta unloaded the idle alpha
    assert statuses(server) == {"alpha": "unloaded", "beta": "loaded"}
    again = chat(server, "alpha")
    assert again.status_code == 200 and again.json()["model"] == "alpha"
    assert loaded(server) == ["alpha"]
    ps = {m["id"]: m for m in httpx.get(server.url + "/v1/ps").json()["data"]}
    assert ps["alpha"]["loads"] == 2 and ps["alpha"]["memory_bytes"] > 64 * 2**20
    assert ps["alpha"]["kv_blocks_total"] > 0 and ps["alpha"]["context_length"] > 0


def test_the_same_prompt_gets_the_same_answer_after_a_reload(one_at_a_time):
    server = one_at_a_time
    first = chat(server, "alpha", "Name a color.", 8, temperature=0).json()["choices"][0]["message"]["content"]
    chat(server, "beta")  # alpha is unloaded
    assert loaded(server) == ["beta"]
    second = chat(server, "alpha", "Name a color.", 8, temperature=0).json()["choices"][0]["message"]["content"]
    assert first == second


def test_a_model_with_a_request_in_flight_is_not_unloaded(one_at_a_time):
    """beta's request waits until alpha's stream ends (one model at a time), and alpha's stream is whole."""
    server = one_at_a_time
    chat(server, "alpha")
    done = {}

    def stream_alpha():
        body = {"model": "alpha", "prompt": "Once upon a time", "max_tokens": 48, "stream": True, "ignore_eos": True}
        pieces = []
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    pieces.append(json.loads(line[6:]))
        done["alpha"] = (time.monotonic(), pieces)

    thread = threading.Thread(target=stream_alpha)
    thread.start()
    time.sleep(0.3)
    answer = chat(server, "beta")
    done["beta"] = time.monotonic()
    thread.join(60)
    assert answer.status_code == 200, answer.text
    ended, pieces = done["alpha"]
    assert sum(len(p["choices"][0]["text"]) > 0 for p in pieces if p["choices"]) >= 40
    assert pieces[-1]["choices"][0]["finish_reason"] == "length"
    assert ended <= done["beta"]  # beta loaded only once alpha was free


def test_a_client_that_hangs_up_lets_its_model_go(one_at_a_time):
    server = one_at_a_time
    chat(server, "alpha")
    body = {"model": "alpha", "prompt": "Once upon a time", "max_tokens": 2000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # hang up after the first token
    assert wait_for(lambda: httpx.get(server.url + "/v1/ps").json()["data"][0]["requests_running"] == 0, 10)
    began = time.monotonic()
    assert chat(server, "beta").status_code == 200  # alpha is idle again: beta loads at once
    assert time.monotonic() - began < 30


def test_an_unknown_model_is_a_404_naming_the_served_ones(one_at_a_time):
    answer = chat(one_at_a_time, "gamma")
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "model_not_found" and "'alpha'" in error["message"] and "'beta'" in error["message"]
    ollama = httpx.post(one_at_a_time.url + "/api/chat", json={"model": "gamma", "messages": []})
    assert ollama.status_code == 404 and "alpha" in ollama.json()["error"]


def test_metrics_carry_the_model(one_at_a_time):
    chat(one_at_a_time, "alpha")
    text = httpx.get(one_at_a_time.url + "/metrics").text
    assert 'mistralcli_model_loaded{model="alpha"} 1.0' in text
    assert 'mistralcli_model_loaded{model="beta"} 0.0' in text
    assert 'mistralcli_kv_blocks_total{model="alpha"}' in text
    assert 'mistralcli_model_requests_total{model="beta",status="200"}' in text
    loads = [line for line in text.splitlines() if line.startswith('mistralcli_model_loads_total{model="alpha"}')]
    assert loads and float(loads[0].split()[-1]) >= 2


def test_mistral_ps_shows_what_is_loaded(one_at_a_time):
    chat(one_at_a_time, "alpha")
    env = {**os.environ, "NO_COLOR": "1"}
    table = subprocess.run(
        [sys.executable, "-m", "mistralcli", "ps", "--url", one_at_a_time.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    header, row, *_ = table.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "STATUS"] and row.split()[:2] == ["alpha", "loaded"]
    as_json = subprocess.run(
        [sys.executable, "-m", "mistralcli", "ps", "--url", one_at_a_time.url + "/v1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    body = json.loads(as_json.stdout)
    assert [m["id"] for m in body["data"]] == ["alpha"] and body["max_loaded"] == 1
    gone = subprocess.run(
        [sys.executable, "-m", "mistralcli", "ps", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert gone.returncode == 1 and "no server answers at http://127.0.0.1:9" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_ollama_keep_alive_unloads_the_model_and_api_ps_shows_it(models_dir):
    server = serve(models_dir)
    try:
        assert statuses(server) == {"alpha": "loaded", "beta": "unloaded"}
        answer = httpx.post(
            server.url + "/api/generate",
            json={"model": "beta", "prompt": "Hi", "stream": False, "keep_alive": "2s", "options": {"num_predict": 3}},
            timeout=120,
        )
        assert answer.status_code == 200 and answer.json()["load_duration"] > 0
        ps = {m["name"]: m for m in httpx.get(server.url + "/api/ps").json()["models"]}
        assert set(ps) == {"alpha:latest", "beta:latest"}  # no --max-loaded: both stay
        assert ps["beta:latest"]["size"] > 0 and ps["beta:latest"]["expires_at"] < ps["alpha:latest"]["expires_at"]
        assert wait_for(lambda: loaded(server) == ["alpha"])  # beta's 2 s passed
        tags = {m["name"]: m for m in httpx.get(server.url + "/api/tags").json()["models"]}
        assert set(tags) == {"alpha:latest", "beta:latest"} and tags["beta:latest"]["details"]["family"] == "llama"
        # an empty request with keep_alive 0: Ollama's way of unloading a model
        unload = httpx.post(server.url + "/api/generate", json={"model": "alpha", "keep_alive": 0}, timeout=60)
        assert unload.status_code == 200 and unload.json()["done_reason"] == "unload"
        assert wait_for(lambda: loaded(server) == [])
        bad = httpx.post(server.url + "/api/generate", json={"model": "alpha", "prompt": "x", "keep_alive": "soon"})
        assert bad.status_code == 400 and "keep_alive" in bad.json()["error"]
        assert loaded(server) == []  # a refused request loads nothing
    finally:
        assert server.stop() == 0


def test_the_keep_alive_flag_unloads_idle_models_and_they_reload(models_dir):
    server = serve(models_dir, "--keep-alive", "1s")
    try:
        assert wait_for(lambda: loaded(server) == [])
        answer = chat(server, "alpha")
        assert answer.status_code == 200
        assert wait_for(lambda: loaded(server) == [])
    finally:
        assert server.stop() == 0


def test_the_memory_budget_unloads_to_make_room_or_refuses_a_model_too_large(models_dir):
    # room for one model's weights (about 100 MB), the copy repacked for the tile kernels where the CPU has them
    # (as large again) and 64 MiB pool, not two
    server = serve(models_dir, "--max-memory", "350MB")
    try:
        assert chat(server, "beta").status_code == 200
        assert loaded(server) == ["beta"]
    finally:
        assert server.stop() == 0
    server = Server(models_dir / "alpha.gguf", "-m", str(models_dir / "beta.gguf"), "--max-memory", "250MB")
    try:  # the default KV pool is far over 250 MB: the model is refused, the server stays up
        answer = chat(server, "beta")
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_too_large"
        assert "--max-memory" in answer.json()["error"]["message"]
        assert httpx.get(server.url + "/health").status_code == 200
    finally:
        assert server.stop() == 0


def test_a_models_dir_lists_its_models_and_loads_none_at_start(models_dir):
    server = Server(None, "--models-dir", str(models_dir), "--kv-cache-mb", "64")
    try:
        assert statuses(server) == {"alpha": "unloaded", "beta": "unloaded"}
        assert httpx.get(server.url + "/ready").json()["models"] == {"alpha": "unloaded", "beta": "unloaded"}
        answer = chat(server, None)  # no model named: the first
        assert answer.status_code == 200 and answer.json()["model"] == "alpha"
        assert statuses(server) == {"alpha": "loaded", "beta": "unloaded"}
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "quoted"),
    [
        (["--keep-alive", "soon"], "'soon'"),
        (["--max-memory", "lots"], "'lots'"),
        (["--models-dir", "/nonexistent-dir"], "/nonexistent-dir"),
        (["-m", "./nonexistent.gguf"], "./nonexistent.gguf"),
        (["--served-model-name", "x", "-m", "y/z"], "--served-model-name"),
    ],
)
def test_bad_flags_are_usage_errors(smollm2_path, args, quoted):
    result = subprocess.run(
        [sys.executable, "-m", "mistralcli", "serve", "-m", str(smollm2_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 2 and quoted in result.stderr and "Traceback" not in result.stderr
