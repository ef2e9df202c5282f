"""POST /v1/chat/completions and /v1/completions: a request becomes engine requests (one per prompt,
each with its n choices), whose outputs are merged and answered whole or as server-sent events."""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

from tornado.iostream import StreamClosedError

from mistralcli.engine.async_engine import EngineDeadError
from mistralcli.engine.engine import RequestError
from mistralcli.server import protocol, tool_calls
from mistralcli.server.base import APIError, BaseHandler, ServerState


@dataclass
class _Choice:
    index: int
    text: str = ""
    token_ids: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None
    started: bool = False
    tools: tool_calls.StreamParser | None = None  # chat requests with tools: finds calls in the text
    tool_calls: list = field(default_factory=list)


def _finish_reason(reason: str | None) -> str:
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


class _GenerateHandler(BaseHandler):
    kind = ""  # "chat" or "text"

    def initialize(self, state: ServerState):
        super().initialize(state)
        self.echo, self.n = False, 1  # text completions: the prompt before each choice's text; choices per prompt
        self.parse_tools = False  # chat completions with tools (and tool_choice not "none")
        self.tool_names: tuple[str, ...] = ()
        self.request_ids: list[str] = []
        self.tasks: list[asyncio.Task] = []
        self.closed = False

    def on_connection_close(self):
        """The client left: stop its requests now, which frees their blocks."""
        self.closed = True
        for task in self.tasks:
            task.cancel()
        for request_id in self.request_ids:
            self.state.engine.cancel(request_id)

    async def generate(
        self,
        request: protocol._Sampling,
        prompts: list[list[int]],
        prompt_texts: list[str | None],
        logprobs: int | None,
    ):
        state = self.state
        if state.shutting_down:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        if not state.alive:
            raise APIError(503, "the engine has stopped; see the server's log", "server_error", code="engine_dead")
        max_tokens = request.requested_max_tokens()
        param = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) else "max_tokens"
        try:
            params = protocol.sampling_params(
                request, state.settings.sampling_defaults, logprobs, max_tokens, state.tokenizer.vocab_size
            )
        except ValueError as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        engine = state.engine.engine
        for ids in prompts:
            if len(ids) + (max_tokens or 1) > state.context_length:
                raise APIError(
                    400,
                    f"this model's context is {state.context_length} tokens; the prompt is {len(ids)} "
                    f"tokens" + (f" and {param} is {max_tokens}" if max_tokens else ""),
                    param="messages" if self.kind == "chat" else "prompt",
                    code="context_length_exceeded",
                )
            try:
                engine.validate(ids, engine.max_tokens_for(params))
            except RequestError as exc:
                raise APIError(
                    400, str(exc), param="messages" if self.kind == "chat" else "prompt", code="invalid_prompt"
                ) from None
        reserved = sum(len(ids) + (max_tokens or 0) * request.n for ids in prompts)
        rate_key = self.key or self.request.remote_ip or "-"
        if state.limiter is not None:
            decision = state.limiter.admit(rate_key, reserved)
            for name, value in decision.headers.items():
                self.set_header(name, value)
            if not decision.allowed:
                headers = dict(decision.headers)
                if decision.retry_after:
                    headers["Retry-After"] = str(max(1, int(decision.retry_after + 0.999)))
                raise APIError(429, decision.message, "rate_limit_error", code="rate_limit_exceeded", headers=headers)

        base = f"{'chatcmpl' if self.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.set_header("x-request-id", base)
        queue: asyncio.Queue = asyncio.Queue()
        streams = []
        try:
            for i, ids in enumerate(prompts):
                request_id, stream = state.engine.add_request(ids, params, f"{base}-{i}")
                self.request_ids.append(request_id)
                state.in_flight.add(request_id)
                streams.append(stream)
        except RequestError as exc:
            self._cancel_all()
            raise APIError(400, str(exc), code="invalid_prompt") from None
        except EngineDeadError as exc:
            self._cancel_all()
            raise APIError(503, str(exc), "server_error", code="engine_dead") from None

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

        self.tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
        choices = {
            (i, j): _Choice(
                i * request.n + j, tools=tool_calls.StreamParser(self.tool_names) if self.parse_tools else None
            )
            for i in range(len(prompts))
            for j in range(request.n)
        }
        usage = {"prompt_tokens": sum(len(ids) for ids in prompts), "completion_tokens": 0, "cached": 0}
        created = int(time.time())
        include_usage = bool(request.stream and request.stream_options and request.stream_options.include_usage)
        if request.stream:
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")
        try:
            open_streams = len(streams)
            while open_streams:
                i, out = await queue.get()
                if out is None:
                    open_streams -= 1
                    continue
                if isinstance(out, BaseException):
                    raise out
                choice = choices[i, out.index]
                choice.text += out.text
                choice.token_ids += out.new_token_ids
                if out.logprobs:
                    choice.logprobs += out.logprobs
                usage["completion_tokens"] += len(out.new_token_ids)
                text = out.text
                if choice.tools is not None:
                    text = choice.tools.feed(out.text)
                    if out.finished:
                        held, choice.tool_calls = choice.tools.finish()
                        text += held
                if out.finished:
                    choice.finish_reason = "tool_calls" if choice.tool_calls else _finish_reason(out.finish_reason)
                    usage["cached"] = max(usage["cached"], out.num_cached_tokens)
                if request.stream:
                    await self._send_chunk(base, created, choice, out, text, prompt_texts, include_usage, logprobs)
            self.usage = (usage["prompt_tokens"], usage["completion_tokens"])
            usage_body = {
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
                "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                "prompt_tokens_details": {"cached_tokens": usage["cached"]},
            }
            ordered = [choices[key] for key in sorted(choices, key=lambda k: choices[k].index)]
            self.log_record["response"] = {
                "id": base,
                "choices": [{"text": c.text, "finish_reason": c.finish_reason} for c in ordered],
            }
            if request.stream:
                if include_usage:
                    await self._sse(
                        {
                            "id": base,
                            "object": self._chunk_object(),
                            "created": created,
                            "model": state.settings.model_name,
                            "choices": [],
                            "usage": usage_body,
                        }
                    )
                await self._sse_raw("data: [DONE]\n\n")
                self.finish()
            else:
                self.write_json(self._response(base, created, ordered, prompt_texts, usage_body, logprobs, request.n))
        except StreamClosedError:
            self.on_connection_close()
        except asyncio.CancelledError:
            if not self.closed:
                raise
        except RequestError as exc:
            self._fail(APIError(400, str(exc), code="invalid_prompt"))
        except EngineDeadError as exc:
            self._fail(APIError(503, str(exc), "server_error", code="engine_dead"))
        finally:
            self._cancel_all()
            for request_id in self.request_ids:
                state.in_flight.discard(request_id)
            if state.limiter is not None:
                state.limiter.settle(rate_key, usage["prompt_tokens"] + usage["completion_tokens"] - reserved)

    def _cancel_all(self):
        for task in self.tasks:
            if not task.done():
                task.cancel()
        for request_id in self.request_ids:
            self.state.engine.cancel(request_id)

    def _fail(self, error: APIError):
        if self._headers_written:  # mid-stream: an error event, then the end
            asyncio.ensure_future(self._sse_raw(f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n"))
            self.finish()
        else:
            raise error

    async def _sse(self, obj):
        await self._sse_raw(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n")

    async def _sse_raw(self, text: str):
        if self.closed:
            raise StreamClosedError()
        self.write(text)
        await self.flush()

    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def _token(self, token_id: int) -> tuple[str, list[int]]:
        raw = self.state.tokenizer.decode_bytes([token_id], skip_special=False)
        return raw.decode("utf-8", errors="replace"), list(raw)

    def _chat_logprobs(self, entries) -> dict:
        content = []
        for e in entries:
            text, raw = self._token(e.token_id)
            top = []
            for token_id, lp in e.top:
                t, b = self._token(token_id)
                top.append({"token": t, "logprob": lp, "bytes": b})
            content.append({"token": text, "logprob": e.logprob, "bytes": raw, "top_logprobs": top})
        return {"content": content}

    def _text_logprobs(self, entries, offset: int) -> dict:
        tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
        for e in entries:
            text, _ = self._token(e.token_id)
            tokens.append(text)
            token_logprobs.append(e.logprob)
            top_logprobs.append({self._token(t)[0]: lp for t, lp in e.top})
            offsets.append(offset)
            offset += len(text)
        return {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": offsets,
        }

    async def _send_chunk(self, base, created, choice: _Choice, out, text, prompt_texts, include_usage, logprobs):
        """One choice's new text (tool calls held back) as an SSE chunk."""
        if self.kind == "chat":
            delta = {} if choice.started else {"role": "assistant", "content": ""}
            choice.started = True
            if text:
                delta["content"] = text
            if out.finished and choice.tool_calls:
                delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(choice.tool_calls)]
            body = {
                "index": choice.index,
                "delta": delta,
                "logprobs": self._chat_logprobs(out.logprobs) if logprobs is not None and out.logprobs else None,
                "finish_reason": choice.finish_reason if out.finished else None,
            }
        else:
            if not choice.started:
                choice.started = True
                if self.echo:
                    text = (prompt_texts[choice.index // self.n] or "") + text
            body = {
                "index": choice.index,
                "text": text,
                "logprobs": self._text_logprobs(out.logprobs or [], 0) if logprobs is not None else None,
                "finish_reason": choice.finish_reason if out.finished else None,
            }
        if not text and not out.finished and not (self.kind == "chat" and "role" in body["delta"]):
            return
        chunk = {
            "id": base,
            "object": self._chunk_object(),
            "created": created,
            "model": self.state.settings.model_name,
            "choices": [body],
        }
        if self.kind == "chat":
            chunk["system_fingerprint"] = None
        if include_usage:
            chunk["usage"] = None
        await self._sse(chunk)

    @staticmethod
    def _message(c: _Choice) -> dict:
        if not c.tool_calls:
            return {"role": "assistant", "content": c.text}
        return {"role": "assistant", "content": c.tools.content(), "tool_calls": c.tool_calls}

    def _response(self, base, created, ordered, prompt_texts, usage, logprobs, n) -> dict:
        if self.kind == "chat":
            choices = [
                {
                    "index": c.index,
                    "message": self._message(c),
                    "logprobs": self._chat_logprobs(c.logprobs) if logprobs is not None else None,
                    "finish_reason": c.finish_reason,
                }
                for c in ordered
            ]
            return {
                "id": base,
                "object": "chat.completion",
                "created": created,
                "model": self.state.settings.model_name,
                "choices": choices,
                "usage": usage,
                "system_fingerprint": None,
            }
        choices = []
        for c in ordered:
            prefix = (prompt_texts[c.index // n] or "") if self.echo else ""
            choices.append(
                {
                    "index": c.index,
                    "text": prefix + c.text,
                    "logprobs": self._text_logprobs(c.logprobs, len(prefix)) if logprobs is not None else None,
                    "finish_reason": c.finish_reason,
                }
            )
        return {
            "id": base,
            "object": "text_completion",
            "created": created,
            "model": self.state.settings.model_name,
            "choices": choices,
            "usage": usage,
        }


class ChatCompletionsHandler(_GenerateHandler):
    route = "/v1/chat/completions"
    kind = "chat"

    async def post(self):
        request = self.parse(protocol.ChatCompletionRequest)
        self.check_model(request.model)
        if request.top_logprobs is not None and not request.logprobs:
            raise APIError(400, "top_logprobs needs logprobs set to true", param="top_logprobs", code="invalid_value")
        text = self.render_chat(
            request.template_messages(), request.tools, request.add_generation_prompt, request.chat_template_kwargs
        )
        self.parse_tools = bool(request.tools) and request.tool_choice != "none"
        self.tool_names = tuple(t.function.name for t in request.tools or ())
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        await self.generate(request, [self.encode_rendered(text)], [None], logprobs)


class CompletionsHandler(_GenerateHandler):
    route = "/v1/completions"
    kind = "text"

    async def post(self):
        request = self.parse(protocol.CompletionRequest)
        self.check_model(request.model)
        self.echo, self.n = request.echo, request.n
        tokenizer = self.state.tokenizer
        prompts, texts = [], []
        for prompt in request.prompts():
            if isinstance(prompt, str):
                if not prompt:
                    raise APIError(400, "prompt: the prompt is empty", param="prompt", code="invalid_value")
                prompts.append(tokenizer.encode(prompt))
                texts.append(prompt)
            else:
                bad = [t for t in prompt if t >= tokenizer.vocab_size]
                if bad:
                    raise APIError(
                        400,
                        f"prompt: token id {bad[0]} is outside the vocabulary ({tokenizer.vocab_size} tokens)",
                        param="prompt",
                        code="invalid_value",
                    )
                prompts.append(list(prompt))
                texts.append(tokenizer.decode(prompt))
        await self.generate(request, prompts, texts, request.logprobs)
