"""AsyncEngine: the engine stepping in its own thread, with an asyncio front for servers.

`add_request` validates at once (a bad request raises and is never queued) and returns an async
iterator of RequestOutputs; `cancel` stops a request and frees its blocks. A consumer that stops
iterating early (a client that disconnected) cancels its request. The engine thread takes new
requests and cancellations from an inbox between steps, so the event loop never waits for a
step; the kernels release the GIL while they compute.
"""

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator

from mistralcli.engine.engine import Engine, RequestError, RequestOutput
from mistralcli.sampling import SamplingParams


class EngineDeadError(RuntimeError):
    """The engine thread stopped on an error; requests can no longer be served."""


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._streams_lock = threading.Lock()
        self._ids = itertools.count()
        self._stopping = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mistralcli-engine", daemon=True)
        self._thread.start()

    # ---- the event loop's side -------------------------------------------------------------------
    def add_request(
        self, prompt_ids: list[int], params: SamplingParams | None = None, request_id: str | None = None
    ) -> tuple[str, AsyncIterator[RequestOutput]]:
        """Queue a request; returns (request id, async iterator of its outputs). Raises RequestError now
        for a request the engine cannot take, EngineDeadError once the engine thread has failed."""
        if self.error is not None or self._stopping:
            raise EngineDeadError(f"the engine is not running ({self.error or 'shut down'})")
        params = params or SamplingParams()
        self.engine.validate(prompt_ids, self.engine.max_tokens_for(params))
        request_id = request_id or f"req-{next(self._ids)}"
        outputs: asyncio.Queue = asyncio.Queue()
        with self._streams_lock:
            if request_id in self._streams:
                raise RequestError(f"request id {request_id!r} is already in use")
            self._streams[request_id] = (asyncio.get_running_loop(), outputs)
        self._inbox.put(("add", request_id, list(prompt_ids), params))
        self._wakeup.set()
        return request_id, self._iterate(request_id, outputs)

    def cancel(self, request_id: str) -> None:
        """Stop the request now; its blocks are freed before the next step."""
        with self._streams_lock:
            self._streams.pop(request_id, None)
        self._inbox.put(("abort", request_id))
        self._wakeup.set()

    async def _iterate(self, request_id: str, outputs: asyncio.Queue) -> AsyncIterator[RequestOutput]:
        finished = False
        try:
            while not finished:
                out = await outputs.get()
                if isinstance(out, BaseException):
                    finished = True
                    raise out
                finished = out.finished
                yield out
        finally:
            if not finished:  # the consumer left early
                self.cancel(request_id)

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Stop the engine thread; requests still running end with an error."""
        self._stopping = True
        self._wakeup.set()
        self._thread.join(timeout)

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    # ---- the engine thread -------------------------------------------------------------------------
    def _deliver(self, request_id: str, item) -> None:
        with self._streams_lock:
            stream = self._streams.get(request_id)
            if stream is not None and (isinstance(item, BaseException) or item.finished):
                del self._streams[request_id]
        if stream is not None:
            loop, outputs = stream
            try:
                loop.call_soon_threadsafe(outputs.put_nowait, item)
            except RuntimeError:  # that event loop is closed: nobody is listening
                self._inbox.put(("abort", request_id))

    def _drain_inbox(self) -> None:
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return
            if message[0] == "add":
                _, request_id, prompt_ids, params = message
                with self._streams_lock:
                    wanted = request_id in self._streams
                if not wanted:  # cancelled before it started
                    continue
                try:
                    self.engine.add_request(request_id, prompt_ids, params)
                except RequestError as exc:
                    self._deliver(request_id, exc)
            else:
                self.engine.abort(message[1])

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._drain_inbox()
                if not self.engine.has_unfinished():
                    self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                for out in self.engine.step():
                    self._deliver(out.request_id, out)
        except BaseException as exc:
            self.error = exc
        finally:
            reason = self.error or EngineDeadError("the engine was shut down")
            with self._streams_lock:
                ids = list(self._streams)
            for request_id in ids:
                self._deliver(request_id, EngineDeadError(f"the engine stopped: {reason}"))
