"""The generation endpoints' common loop (completions.py has POST /v1/completions, chat.py POST
/v1/chat/completions): a request becomes engine requests (one per prompt, each with its n choices), whose
outputs are merged and answered whole or as server-sent events.

`_GenerateHandler.generate` runs the four stages both share: admission (the server serves, the
request is valid and within its rate limit), submission (one engine request per prompt), merging
the prompts' streams, and the answer. The two handlers differ only in how a choice reads: a chat
message with a delta when streamed, or a text (echoing its prompt when asked)."""

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from tornado.iostream import StreamClosedError

from mistralcli.engine.async_engine import EngineDeadError
from mistralcli.engine.engine import RequestError, RequestOutput
from mistralcli.sampling import SamplingParams
from mistralcli.server import protocol
from mistralcli.server.base import APIError, BaseHandler, ServerState
from mistralcli.structured import StructuredOutputs


@dataclass
class _Choice:
    index: int
    text: str = ""
    token_ids: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None
    stop_string: str | None = None  # the stop string that ended it, if one did
    started: bool = False
    grammar_complete: bool | None = None  # a constrained choice's, once finished (see RequestOutput)

    def add(self, out: RequestOutput):
        """Take one of the engine's outputs for this choice; returns what to send of it (here its text)."""
        self.text += out.text
        self.token_ids += out.new_token_ids
        if out.logprobs:
            self.logprobs += out.logprobs
        if out.finished:
            self.finish_reason = _finish_reason(out.finish_reason)
            self.stop_string = out.stop_string
            self.grammar_complete = out.grammar_complete
        return out.text


@dataclass
class _Usage:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0

    def body(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


def _finish_reason(reason: str | None) -> str:
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


class _GenerateHandler(BaseHandler):
    id_prefix = ""  # of the completion's id, with its separator
    prompt_param = ""  # the request field holding the prompt, named in its errors
    response_object = ""
    chunk_object = ""
    extra_fields: dict = {}  # in every response and chunk

    def initialize(self, state: ServerState):
        super().initialize(state)
        self.request_ids: list[str] = []
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.completion_id = ""
        self.created = 0
        self.logprobs: int | None = None  # top logprobs per token, None: no logprobs
        self.include_usage = False  # a stream ends with a usage chunk
        self.structured_param: str | None = None  # the request field the output's constraint came from
        self.choices: list[_Choice] = []  # the answer's, once generated

    def on_connection_close(self):
        """The client left: stop its requests now, which frees their blocks."""
        self.closed = True
        for task in self.tasks:
            task.cancel()
        for request_id in self.request_ids:
            self.state.engine.cancel(request_id)

    async def generate(self, request: protocol._Sampling, prompts: list[list[int]], logprobs: int | None):
        """Answer the request for these prompts (token ids), n choices each."""
        params = await self._admit(request, prompts, logprobs)
        self.completion_id = f"{self.id_prefix}{uuid.uuid4().hex[:24]}"
        self.set_header("x-request-id", self.completion_id)
        self.created = int(time.time())
        self.logprobs = logprobs
        self.include_usage = bool(request.stream and request.stream_options and request.stream_options.include_usage)
        usage = _Usage(0)
        try:
            await self._generation_started()
            choices = self.choices = await self._rounds(request, prompts, params, usage)
            self.usage = (usage.prompt_tokens, usage.completion_tokens)
            self.log_record["response"] = {
                "id": self.completion_id,
                "choices": [{"text": c.text, "finish_reason": c.finish_reason} for c in choices],
            }
            if request.stream:
                await self._end_stream(usage)
            else:
                self.write_json(self._response(choices, usage))
        except StreamClosedError:
            self.on_connection_close()
        except asyncio.CancelledError:
            if not self.closed:
                raise
        except APIError as exc:  # refused at submission, or cut by the server (shutting down)
            await self._fail(exc)
        except RequestError as exc:
            await self._fail(APIError(400, str(exc), code="invalid_prompt"))
        except EngineDeadError as exc:
            await self._fail(APIError(503, str(exc), "server_error", code="engine_dead"))
        finally:
            self._cancel_all()
            for request_id in self.request_ids:
                self.state.in_flight.discard(request_id)
            if self.state.limiter is not None:
                used = usage.prompt_tokens + usage.completion_tokens
                self.state.limiter.settle(self._rate_key(), used - self.reserved_tokens)
            await self._generation_done()

    async def _generation_started(self) -> None:
        """A hook: the request is admitted and has its id; its generation starts."""

    async def _generation_done(self) -> None:
        """A hook: the request is over (answered, failed or cut)."""

    # ---- admission
    async def _admit(
        self, request: protocol._Sampling, prompts: list[list[int]], logprobs: int | None
    ) -> SamplingParams:
        """Check that the server serves, that the request and its prompts are valid, and take it from
        the rate limit (setting its headers); returns the engine's sampling params. A constraint is compiled
        on a worker thread (a large schema takes a while), so other streams go on meanwhile."""
        state = self.state
        if state.shutting_down:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        if not state.alive:
            raise APIError(503, "the engine has stopped; see the server's log", "server_error", code="engine_dead")
        max_tokens = request.requested_max_tokens()
        try:
            params = protocol.sampling_params(request, state.settings.sampling_defaults, logprobs, max_tokens)
        except ValueError as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        structured, self.structured_param = self.structured(request)
        extra = self.sampling_extras(request)
        if structured is not None:
            extra["structured"] = structured
        if extra:
            params = dataclasses.replace(params, **extra)
        try:
            if params.structured is not None:
                await asyncio.get_running_loop().run_in_executor(None, state.engine.validate, prompts[0], params)
            for ids in prompts:  # the constraint is compiled (and cached) by now: these checks are quick
                state.engine.validate(ids, params)
        except RequestError as exc:
            raise self._refused(exc, request) from None
        self._take_rate_limit(sum(len(ids) + (max_tokens or 0) * request.n for ids in prompts))
        return params

    def _refused(self, exc: RequestError, request: protocol._Sampling | None) -> APIError:
        """The engine's refusal in OpenAI's terms: the field it names, under this protocol's name."""
        param = exc.param or self.prompt_param
        message = str(exc)
        if param == "structured":  # the constraint did not compile: named by the field it came from
            param = self.structured_param
            message = f"{param}: {exc.detail}"
        if param == "max_tokens" and request is not None:
            param = request.max_tokens_field()
            message = message.replace("max_tokens", param)
        return APIError(400, message, param=param, code=exc.code)

    def sampling_extras(self, request: protocol._Sampling) -> dict:
        """SamplingParams fields a handler sets beyond the request's own sampling fields (none here)."""
        return {}

    def structured(self, request: protocol._Sampling) -> tuple[StructuredOutputs | None, str | None]:
        """The constraint on the request's output, and the request field it came from (for errors): its
        response_format, grammar or structured_outputs. Raises APIError (400) for one that is not
        well-formed."""
        try:
            return request.structured()
        except ValueError as exc:
            param = next((n for n in ("response_format", "grammar", "structured_outputs") if getattr(request, n)), None)
            raise APIError(400, str(exc), param=param, code="invalid_value") from None

    # ---- generation
    async def _rounds(
        self, request: protocol._Sampling, prompts: list[list[int]], params: SamplingParams, usage: _Usage
    ) -> list[_Choice]:
        """Generate the answer's choices (one round here; the chat handler's tool loop runs several)."""
        choices = [self._new_choice(index) for index in range(len(prompts) * request.n)]
        await self._round(request, prompts, params, choices, usage)
        return choices

    async def _round(
        self,
        request: protocol._Sampling,
        prompts: list[list[int]],
        params: SamplingParams,
        choices: list[_Choice],
        usage: _Usage,
    ) -> None:
        """One engine request per prompt, their outputs taken into the choices (and streamed) as they come;
        usage counts this round's tokens."""
        usage.prompt_tokens += sum(len(ids) for ids in prompts)
        streams = self._submit(prompts, params)
        if request.stream and not self._headers_written:
            await self._open_stream()
        cached = 0
        async with aclosing(self._merge(streams)) as outputs:
            async for i, out in outputs:
                choice = choices[i * request.n + out.index]
                text = choice.add(out)
                usage.completion_tokens += len(out.new_token_ids)
                if out.finished:
                    cached = max(cached, out.num_cached_tokens)
                    await self._choice_done(choice)
                if request.stream:
                    await self._send_chunk(choice, out, text)
        usage.cached_tokens += cached

    async def _choice_done(self, choice: _Choice) -> None:
        """A hook: the choice has its last output (taken, its chunk not yet sent)."""

    # ---- submission and merging
    def _submit(self, prompts: list[list[int]], params: SamplingParams) -> list[AsyncIterator[RequestOutput]]:
        """One engine request per prompt; returns their streams, in the prompts' order."""
        streams = []
        try:
            for ids in prompts:
                number = len(self.request_ids)  # across the rounds of a tool loop
                request_id, stream = self.state.engine.add_request(ids, params, f"{self.completion_id}-{number}")
                self.request_ids.append(request_id)
                self.state.in_flight.add(request_id)
                streams.append(stream)
        except RequestError as exc:
            raise self._refused(exc, None) from None
        except EngineDeadError as exc:
            raise APIError(503, str(exc), "server_error", code="engine_dead") from None
        return streams

    async def _merge(self, streams: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
        """The streams' outputs as they come, each with its stream's index, until all have ended; raises
        the first error a stream ends with."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i, stream):
            try:
                async for out in stream:
                    queue.put_nowait((i, out))
            except asyncio.CancelledError:
                await stream.aclose()
                raise
            except BaseException as exc:
                queue.put_nowait((i, exc))
            finally:
                queue.put_nowait((i, None))

        self.tasks += [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
        num_open = len(streams)
        while num_open:
            i, out = await queue.get()
            if out is None:
                num_open -= 1
            elif isinstance(out, BaseException):
                raise out
            else:
                yield i, out

    def _cancel_all(self):
        for task in self.tasks:
            if not task.done():
                task.cancel()
        for request_id in self.request_ids:
            self.state.engine.cancel(request_id)

    # ---- the answer
    def _new_choice(self, index: int) -> _Choice:
        return _Choice(index)

    def _chunk_choice(self, choice: _Choice, out: RequestOutput, text: str) -> dict | None:
        """A streamed chunk's entry for one output of a choice; None: nothing worth a chunk."""
        raise NotImplementedError

    def _response_choice(self, choice: _Choice) -> dict:
        raise NotImplementedError

    def _response(self, choices: list[_Choice], usage: _Usage) -> dict:
        return {
            "id": self.completion_id,
            "object": self.response_object,
            "created": self.created,
            "model": self.state.settings.model_name,
            "choices": [self._marked(c, self._response_choice(c)) for c in choices],
            "usage": usage.body(),
            **self.extra_fields,
        }

    async def _open_stream(self):
        """Send the headers now: from here on, an error is an event in the stream."""
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        await self.flush()

    @staticmethod
    def _marked(choice: _Choice, body: dict) -> dict:
        """A choice's body, marked when its constrained output ended before its grammar accepts (the
        output is then not valid under the constraint: finish_reason says "length")."""
        if choice.grammar_complete is False:
            body["structured_output_incomplete"] = True
        return body

    async def _send_chunk(self, choice: _Choice, out: RequestOutput, text: str):
        body = self._chunk_choice(choice, out, text)
        if body is None:
            return
        if out.finished:
            self._marked(choice, body)
        await self._sse(self._chunk([body]))

    def _chunk(self, choices: list[dict]) -> dict:
        chunk = {
            "id": self.completion_id,
            "object": self.chunk_object,
            "created": self.created,
            "model": self.state.settings.model_name,
            "choices": choices,
            **self.extra_fields,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    async def _end_stream(self, usage: _Usage):
        if self.include_usage:
            await self._sse(
                {
                    "id": self.completion_id,
                    "object": self.chunk_object,
                    "created": self.created,
                    "model": self.state.settings.model_name,
                    "choices": [],
                    "usage": usage.body(),
                }
            )
        await self._sse_raw("data: [DONE]\n\n")
        self.finish()

    async def _fail(self, error: APIError):
        if not self._headers_written:
            raise error
        try:
            await self._send_error(error)
            await self.finish()
        except StreamClosedError:
            self.on_connection_close()

    async def _send_error(self, error: APIError) -> None:
        """Mid-stream: an error event, then the end (in this protocol's terms)."""
        await self._sse_raw(f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n")

    async def _sse(self, obj):
        await self._sse_raw(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n")

    async def _sse_raw(self, text: str):
        if self.closed:
            raise StreamClosedError()
        self.write(text)
        await self.flush()

    def _token(self, token_id: int) -> tuple[str, list[int]]:
        raw = self.state.tokenizer.decode_bytes([token_id], skip_special=False)
        return raw.decode("utf-8", errors="replace"), list(raw)
