"""AsyncEngine: the engine stepping in its own thread, with an asyncio front for servers.

`add_request` validates at once (a bad request raises and is never queued) and returns an async
iterator of RequestOutputs, which ends once every one of the request's n choices has finished (each
output's `index` says its choice, and its `finished` is that choice's); `cancel` stops a request and
frees its blocks. A consumer that stops iterating early (a client that disconnected) cancels its
request. The engine thread takes new requests and cancellations from an inbox between steps, so the
event loop never waits for a step; the kernels release the GIL while they compute.
"""

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from mistralcli.engine.engine import Engine, RequestError, RequestOutput
from mistralcli.engine.metrics import EngineCounters
from mistralcli.sampling import SamplingParams


class EngineDeadError(RuntimeError):
    """The engine thread stopped on an error; requests can no longer be served."""


@dataclass
class _Stream:
    """Where a request's outputs go: a queue of (output or error, is it the last) on its event loop."""

    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue
    num_unfinished: int  # choices not finished yet


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._streams: dict[str, _Stream] = {}
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
        self.validate(prompt_ids, params)
        request_id = request_id or f"req-{next(self._ids)}"
        outputs: asyncio.Queue = asyncio.Queue()
        with self._streams_lock:
            if request_id in self._streams:
                raise RequestError(f"request id {request_id!r} is already in use")
            self._streams[request_id] = _Stream(asyncio.get_running_loop(), outputs, params.n)
        self._inbox.put(("add", request_id, list(prompt_ids), params))
        self._wakeup.set()
        return request_id, self._iterate(request_id, outputs)

    def validate(self, prompt_ids: list[int], params: SamplingParams | None = None) -> None:
        """Raise RequestError if add_request would refuse this prompt with these params (queues nothing)."""
        self.engine.validate(prompt_ids, params)

    def cancel(self, request_id: str, error: BaseException | None = None) -> None:
        """Stop the request now; its blocks are freed before the next step. With an error, its stream
        raises it; without, the stream gets nothing more (for a consumer that is leaving)."""
        if error is not None:
            self._deliver(request_id, error)
        with self._streams_lock:
            self._streams.pop(request_id, None)
        self._inbox.put(("abort", request_id))
        self._wakeup.set()

    async def _iterate(self, request_id: str, outputs: asyncio.Queue) -> AsyncIterator[RequestOutput]:
        finished = False
        try:
            while not finished:
                out, finished = await outputs.get()
                if isinstance(out, BaseException):
                    raise out
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

    @property
    def is_alive(self) -> bool:
        """Whether the engine thread runs (it stops on shutdown, or on an error, kept in `error`)."""
        return self.error is None and self._thread.is_alive()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    @property
    def counters(self) -> EngineCounters:
        return self.engine.counters

    def stats(self) -> dict:
        """The engine's snapshot for metrics (see Engine.stats); read between steps, it may lag one."""
        return self.engine.stats()

    # ---- the engine thread -------------------------------------------------------------------------
    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        """Hand an output (or the error that ends the request) to its stream; the stream ends with the
        error, or with the output that finishes the last of the request's choices."""
        with self._streams_lock:
            stream = self._streams.get(request_id)
            if stream is None:
                return
            if isinstance(item, BaseException):
                stream.num_unfinished = 0
            elif item.finished:
                stream.num_unfinished -= 1
            is_last = stream.num_unfinished == 0
            if is_last:
                del self._streams[request_id]
        try:
            stream.loop.call_soon_threadsafe(stream.outputs.put_nowait, (item, is_last))
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
