"""The server's drain on shutdown, in-process with SmolLM2: while draining, /health answers 200, /ready and
new completions 503; at the timeout each open stream gets an error event and its end, and serve_app returns."""

import asyncio
import json
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


class InProcessServer:
    """serve_app in a thread of its own (its own event loop), stopped as a signal would stop it."""

    def __init__(self, loaded, shutdown_timeout: float):
        from mistralcli.engine.engine import Engine, EngineConfig
        from mistralcli.server.app import ServerSettings, make_app

        engine = Engine(loaded.model, loaded.tokenizer, loaded.context_length, EngineConfig(kv_cache_mb=16))
        settings = ServerSettings(model_name="smollm2", chat_template=loaded.chat_template, access_log=None)
        self.app = make_app(engine, settings)
        self.shutdown_timeout = shutdown_timeout
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(30), "the server did not start"

    def _run(self):
        from mistralcli.server.serve import serve_app

        async def main():
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()

            def ready(url):
                self.url = url
                self.started.set()

            await serve_app(
                self.app, "127.0.0.1", 0, shutdown_timeout=self.shutdown_timeout, on_ready=ready, stop=self.stop_event
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc

    def stop(self):
        self.loop.call_soon_threadsafe(self.stop_event.set)


def assert_openai_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code and error["message"]


def test_the_drain_keeps_answering_and_cuts_streams_with_an_error_then_done(smollm2):
    server = InProcessServer(smollm2, shutdown_timeout=2.0)
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
    assert not server.app.mistral_state.engine.is_alive
