"""Servers for the tests that need one in this process: `InProcessServer` runs serve_app in a thread of its own
(its own event loop), stopped as a signal would stop it; `ScriptedEngine` is an engine whose answers a test
writes (a function of the prompt), streamed a token at a time through the real server."""

import asyncio
import threading

from mistralcli.engine.async_engine import AsyncEngine
from mistralcli.engine.engine import RequestOutput


class InProcessServer:
    def __init__(self, app, shutdown_timeout: float = 30.0):
        self.app = app
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

    def stop(self, wait: float | None = None):
        self.loop.call_soon_threadsafe(self.stop_event.set)
        if wait is not None:
            self.thread.join(wait)


class ScriptedEngine(AsyncEngine):
    """The real engine validates (its model's tokenizer and context), but every answer is `script(prompt)`,
    the prompt as text (control tokens kept), streamed a token at a time, one every `token_delay` seconds.
    `asked` keeps each request's (prompt text, sampling params)."""

    def __init__(self, engine, script, token_delay: float = 0.0):
        super().__init__(engine)
        self.script = script
        self.token_delay = token_delay
        self.asked: list[tuple[str, object]] = []

    def add_request(self, prompt_ids, params=None, request_id=None):
        self.validate(prompt_ids, params)
        prompt = self.tokenizer.decode(prompt_ids, skip_special=False)
        self.asked.append((prompt, params))
        ids = self.tokenizer.encode(self.script(prompt), add_special=False)
        return request_id, self._outputs(request_id, ids, len(prompt_ids))

    async def _outputs(self, request_id, ids, num_prompt_tokens):
        for k, token in enumerate(ids):
            await asyncio.sleep(self.token_delay)
            last = k == len(ids) - 1
            yield RequestOutput(
                request_id,
                [token],
                self.tokenizer.decode([token], skip_special=False),
                finished=last,
                finish_reason="stop" if last else None,
                num_prompt_tokens=num_prompt_tokens,
                num_output_tokens=k + 1,
            )
