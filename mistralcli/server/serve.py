"""Running the server: bind, say where, serve until SIGINT/SIGTERM, then shut down gracefully.

The drain: connections are still accepted, /health answers 200, /ready and new completions 503; the
requests in flight have `shutdown_timeout` seconds to finish. Those still running then end with a
503 error (on a stream, an error event and `data: [DONE]`); then the connections close and the
engine stops."""

import asyncio
import signal
import threading
import time
from collections.abc import Callable

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from mistralcli.server.base import APIError, ServerShared
from mistralcli.server.model_manager import EXPIRE_INTERVAL_S

ANSWER_TIMEOUT_S = 5.0  # for a cut request's error to reach its client, and for the connections to close


async def serve_app(
    app: tornado.web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 30.0,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve `app` (from make_app) on host:port (0: a free port) until SIGINT/SIGTERM or `stop` is set."""
    state = app.mistral_state
    # Bodies stream into the handlers, which answer one over the limit with the 413 in OpenAI's shape
    # (base.BaseHandler.prepare); tornado's own cap, a bare 400, only meets chunked bodies this large
    server = tornado.httpserver.HTTPServer(
        app, max_body_size=64 * state.settings.max_body_bytes + (1 << 20), idle_connection_timeout=600
    )
    sockets = tornado.netutil.bind_sockets(port, host)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    # the first constrained request would wait for llguidance's tokenizer (0.4 s for 150k tokens): build it now
    for slot in state.models.loaded():
        if slot.state.engine is not None:
            grammars = slot.state.engine.engine.grammars
            threading.Thread(target=lambda g=grammars: g.lltokenizer, name="grammar-tokenizer", daemon=True).start()
    tornado.ioloop.PeriodicCallback(state.models.expire, EXPIRE_INTERVAL_S * 1000).start()
    if state.responses is not None:  # the stored responses past their time to live go, hourly
        tornado.ioloop.PeriodicCallback(state.responses.expire, 3600 * 1000).start()
    if on_ready is not None:
        on_ready(f"http://{shown}:{bound[1]}")
    await stop.wait()
    state.shutting_down = True
    await _wait_for_requests(state, shutdown_timeout)
    for slot in state.models.loaded():
        for request_id in list(slot.state.in_flight):
            error = APIError(
                503, "the server shut down before this request finished", "server_error", code="shutting_down"
            )
            slot.state.engine.cancel(request_id, error)
    await _wait_for_requests(state, ANSWER_TIMEOUT_S)  # their handlers answer with the error
    server.stop()
    try:
        await asyncio.wait_for(server.close_all_connections(), timeout=ANSWER_TIMEOUT_S)
    except TimeoutError:
        pass
    await state.models.shutdown()


def _in_flight(state: ServerShared) -> bool:
    return any(slot.state.in_flight for slot in state.models.loaded())


async def _wait_for_requests(state: ServerShared, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _in_flight(state) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
