"""The server's drain on shutdown, in-process with SmolLM2: while draining, /health answers 200, /ready and
new completions 503; at the timeout each open stream gets an error event and its end, and serve_app returns."""

import json
import threading
import time

import httpx
import pytest
from server_harness import InProcessServer

pytestmark = pytest.mark.slow


def in_process_server(loaded, shutdown_timeout: float) -> InProcessServer:
    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.server.app import ServerSettings, make_app

    engine = Engine(loaded.model, loaded.tokenizer, loaded.context_length, EngineConfig(kv_cache_mb=16))
    settings = ServerSettings(model_name="smollm2", chat_template=loaded.chat_template, access_log=None)
    return InProcessServer(make_app(engine, settings), shutdown_timeout)


def assert_openai_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code and error["message"]


def test_the_drain_keeps_answering_and_cuts_streams_with_an_error_then_done(smollm2):
    server = in_process_server(smollm2, shutdown_timeout=2.0)
    engine = server.app.mistral_state.models.find(None).state.engine
    long_request = {"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True}
    events, whole = [], {}

    def stream():
        with httpx.stream(
            "POST", server.url + "/v1/completions", json={**long_request, "stream": True}, timeout=60
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    data = line.removeprefix("data: ")
                    events.append(data if data == "[DONE]" else json.loads(data))

    def ask():
        whole["r"] = httpx.post(server.url + "/v1/completions", json=long_request, timeout=60)

    clients = [threading.Thread(target=stream), threading.Thread(target=ask)]
    for t in clients:
        t.start()
    deadline = time.monotonic() + 30
    while not (events and httpx.get(server.url + "/ready").json()["running"] == 2):
        assert time.monotonic() < deadline, "the requests did not start"
        time.sleep(0.02)

    server.stop()
    while httpx.get(server.url + "/ready").status_code == 200:  # new connections, all through the drain
        assert time.monotonic() < deadline, "the drain did not start"
        time.sleep(0.02)
    assert_openai_error(httpx.get(server.url + "/ready"), 503, "not_ready")
    health = httpx.get(server.url + "/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert_openai_error(httpx.post(server.url + "/v1/completions", json={"prompt": "Hi"}), 503, "shutting_down")
    assert_openai_error(
        httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}),
        503,
        "shutting_down",
    )

    for t in clients:
        t.join(30)
    server.thread.join(30)
    assert not server.thread.is_alive() and server.error is None
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    error = events[-2]["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "shutting_down"
    assert all("choices" in event for event in events[:-2])
    assert_openai_error(whole["r"], 503, "shutting_down")
    assert not engine.is_alive and not server.app.mistral_state.models.loaded()
