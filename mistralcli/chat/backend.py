"""Where `mistral chat`'s answers come from, behind one interface: the model in this process (LocalBackend,
over the engine) or a server that speaks OpenAI's chat completions (RemoteBackend: `mistral serve`, vLLM,
llama-server, ...).

`backend.answer(conversation, settings, tools)` starts an answer in a thread of its own and returns its
Stream: the chat reads the pieces as they come and may cancel it at any time (Ctrl-C), and the engine is
only ever stepped between pieces, never interrupted inside a step. A failure the person can do something
about (a server down or answering an error, a conversation longer than the context) ends the Stream with
`reply.error` set; the chat says it and stays open."""

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from mistralcli.errors import MistralError

log = logging.getLogger("mistralcli.chat")

DEFAULT_MAX_TOKENS = 1024
# the settings OpenAI's chat completions name; the others go to the server in the request's body, named as
# vLLM (and `mistral serve`) name them
OPENAI_SETTINGS = ("temperature", "top_p", "max_tokens", "seed", "stop", "presence_penalty", "frequency_penalty")


class BackendError(MistralError):
    """An answer could not be had (what to tell the person)."""


@dataclass
class Reply:
    """What an answer came to, besides its text (which the reader has from the batches)."""

    tool_calls: list[dict] = field(default_factory=list)  # OpenAI's shape
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    seconds: float | None = None
    decode_s: float | None = None  # from the first token to the last (tok/s: completion_tokens - 1 over it)
    error: str | None = None


Emit = Callable[[str, str], None]  # (reasoning, content)


class Stream:
    """An answer being made by produce(reply, emit, cancelled) in a thread: iterate `batches()` for the
    (reasoning, content) pieces as they come (all those waiting at once, so a reader stores them once);
    `cancel()` asks it to stop and `wait()` returns the reply once it has."""

    def __init__(self, produce: Callable[[Reply, Emit, threading.Event], None], interrupt: Callable | None = None):
        self.reply = Reply()
        self.cancelled = threading.Event()
        self._interrupt = interrupt
        self._queue: queue.Queue = queue.Queue()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, args=(produce,), name="mistralcli-chat", daemon=True)
        self._thread.start()

    def _run(self, produce) -> None:
        try:
            produce(self.reply, self._emit, self.cancelled)
        except MistralError as exc:
            self.reply.error = str(exc)
        except Exception as exc:  # a bug of ours: said, logged, and the chat stays open
            log.debug("the answer failed", exc_info=True)
            self.reply.error = f"the answer failed: {type(exc).__name__}: {exc}"
        finally:
            self.reply.seconds = time.perf_counter() - self._start
            self._queue.put(None)

    def _emit(self, reasoning: str, content: str) -> None:
        if self.reply.ttft_s is None:
            self.reply.ttft_s = time.perf_counter() - self._start
        self._queue.put((reasoning, content))

    def batches(self, interval_s: float = 0.04) -> Iterator[list[tuple[str, str]]]:
        """Until the answer ends (or is cancelled): what came, at most every interval_s (a reader that stores
        and draws each batch costs the engine's thread little of the GIL); waits in short sleeps, so Ctrl-C
        reaches the reader."""
        done = False
        while not done:
            try:
                items = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                continue
            if items[0] is not None:
                self.cancelled.wait(interval_s)
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            done = None in items
            batch = [item for item in items if item is not None]
            if self.cancelled.is_set():
                return
            if batch:
                yield batch

    def cancel(self) -> None:
        self.cancelled.set()
        if self._interrupt is not None:
            self._interrupt()

    def wait(self) -> Reply:
        self._thread.join()
        return self.reply


def check_settings(settings: dict) -> None:
    """A bad setting as a ValueError that names it (max_tokens apart: the engine takes it per request)."""
    from mistralcli.sampling import SamplingParams

    SamplingParams(**{k: v for k, v in settings.items() if k != "max_tokens"})
    if settings.get("max_tokens") is not None and settings["max_tokens"] < 1:
        raise ValueError("max_tokens must be >= 1")


def sampling_names() -> dict[str, type]:
    """What `/set` may set: the engine's sampling parameters with a plain value, and max_tokens."""
    from typing import get_type_hints

    from mistralcli.sampling import SamplingParams

    hints = get_type_hints(SamplingParams)
    skip = {"logit_bias", "allowed_token_ids", "banned_token_ids", "stop_token_ids", "structured", "n"}
    skip |= {"thinking_budget", "logprobs", "skip_special_tokens", "dry_sequence_breakers"}
    return {f.name: hints[f.name] for f in dataclasses.fields(SamplingParams) if f.name not in skip}


class LocalBackend:
    """The model loaded here, on an engine of its own sized for one conversation of the whole context (its
    prefix cache keeps the earlier turns, so a turn only computes what is new)."""

    remote = False

    def __init__(self, spec: str | None, threads: int | None = None, isq: str | None = None, progress=None):
        from mistralcli.engine.engine import Engine, EngineConfig
        from mistralcli.loading.loader import load_model

        self.spec = spec
        self.loaded = load_model(spec, threads=threads, isq=isq, progress=progress)
        if self.loaded.chat_template is None:
            raise MistralError(f"{self.loaded.name} has no chat template: it cannot chat (try `mistral run --raw`)")
        self.name = self.loaded.name
        self.engine = Engine(
            self.loaded.model, self.loaded.tokenizer, self.loaded.context_length, EngineConfig(max_num_seqs=1)
        )

    def describe(self) -> str:
        return f"{self.name} (context {self.loaded.context_length} tokens)"

    def defaults(self) -> dict:
        """The sampling settings an answer gets unless /set changes them."""
        from mistralcli.sampling import SamplingParams

        params = SamplingParams(**self.loaded.sampling_defaults)
        values = {name: getattr(params, name) for name in sampling_names() if name != "max_tokens"}
        return {**values, "max_tokens": DEFAULT_MAX_TOKENS}

    def params(self, settings: dict):
        from mistralcli.sampling import SamplingParams

        values = {**self.loaded.sampling_defaults, **settings}
        values.pop("max_tokens", None)
        return SamplingParams(**values)

    def answer(self, conversation: list[dict], settings: dict, tools: list[dict] | None = None) -> Stream:
        params = self.params(settings)  # a bad setting fails here, before any thread
        max_tokens = settings.get("max_tokens", DEFAULT_MAX_TOKENS)
        return Stream(
            lambda reply, emit, cancelled: self._produce(
                conversation, params, max_tokens, tools, reply, emit, cancelled
            )
        )

    def _prompt(self, conversation: list[dict], params, tools: list[dict] | None):
        """The prompt's ids, the params to generate with, and the reader of the answer."""
        from mistralcli.prompt import encode_prompt, render_chat
        from mistralcli.reasoning import Thinking
        from mistralcli.tools.prompting import AnswerReader, ToolPrompting

        if tools:
            prompting = ToolPrompting(self.loaded, [], tools, params)
            ids, thinking, params = prompting.prompt(conversation)
            return ids, params, prompting.reader(thinking)
        template = self.loaded.chat_template
        text = render_chat(template, conversation)
        thinking = Thinking.of(template.source, text)
        return encode_prompt(self.loaded.tokenizer, text), params, AnswerReader(None, thinking)

    def _produce(self, conversation, params, max_tokens, tools, reply: Reply, emit: Emit, cancelled) -> None:
        from mistralcli.generation import GenerationStats, generate

        ids, params, reader = self._prompt(conversation, params, tools)
        context = self.loaded.context_length
        if len(ids) >= context:
            raise BackendError(
                f"the conversation is {len(ids)} tokens, and {self.name}'s context holds {context}: "
                "/undo or /clear to make room"
            )
        stats = GenerationStats()
        pieces = generate(
            self.loaded.model, self.loaded.tokenizer, ids, params, max_tokens, context, stats, engine=self.engine
        )
        try:
            for piece in pieces:
                if cancelled.is_set():
                    break
                for reasoning, content in reader.feed(piece):
                    emit(reasoning, content)
        finally:
            pieces.close()  # the request is freed from the engine now, even when cancelled
        reply.ttft_s, reply.decode_s = stats.prompt_s or reply.ttft_s, stats.generation_s
        reply.prompt_tokens, reply.completion_tokens = stats.prompt_tokens, stats.completion_tokens
        if cancelled.is_set():
            return
        for reasoning, content in reader.finish():
            emit(reasoning, content)
        reply.finish_reason = stats.finish_reason
        reply.tool_calls = reader.calls


class RemoteBackend:
    """A server that speaks OpenAI's chat completions, through the openai SDK. `model` None: the first the
    server lists."""

    remote = True

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None):
        import httpx
        import openai

        self.url = url.rstrip("/")
        base = self.url if self.url.endswith("/v1") else f"{self.url}/v1"
        key = api_key or os.environ.get("MISTRALCLI_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
        self.client = openai.OpenAI(
            base_url=base, api_key=key, max_retries=0, timeout=httpx.Timeout(600.0, connect=5.0)
        )
        self.spec = model
        self.name = model

    def describe(self) -> str:
        return f"{self.name or 'the server’s model'} at {self.url}"

    @contextmanager
    def _errors(self, cancelled: threading.Event | None = None) -> Iterator[None]:
        """The SDK's errors (and a connection that breaks mid-answer) as what to tell the person; none when
        the answer was cancelled (its connection closed under it)."""
        import httpx
        import openai

        try:
            yield
        except openai.APIStatusError as exc:
            message = exc.message
            if isinstance(exc.body, dict) and isinstance(exc.body.get("error"), dict):
                message = exc.body["error"].get("message", message)
            elif isinstance(exc.body, dict) and "message" in exc.body:
                message = exc.body["message"]
            raise BackendError(f"the server at {self.url} answered {exc.status_code}: {message}") from None
        except (openai.APIConnectionError, httpx.HTTPError) as exc:
            if cancelled is not None and cancelled.is_set():
                return
            cause = exc.__cause__ or exc
            raise BackendError(f"cannot reach the server at {self.url} ({cause}); is it running?") from None

    def _call(self, what: Callable):
        with self._errors():
            return what()

    def models(self) -> list[str]:
        return [m.id for m in self._call(lambda: list(self.client.models.list()))]

    def defaults(self) -> dict:
        return {"max_tokens": DEFAULT_MAX_TOKENS}  # the rest: the server's

    def answer(self, conversation: list[dict], settings: dict, tools: list[dict] | None = None) -> Stream:
        check_settings(settings)  # a bad setting fails here, before any thread
        holder: dict = {}

        def interrupt():
            response = holder.get("stream")
            if response is not None:
                response.close()

        def produce(reply, emit, cancelled):
            self._produce(conversation, settings, tools, reply, emit, cancelled, holder)

        return Stream(produce, interrupt)

    def _produce(self, conversation, settings, tools, reply: Reply, emit: Emit, cancelled, holder) -> None:
        if self.name is None:
            names = self.models()
            if not names:
                raise BackendError(f"the server at {self.url} lists no models")
            self.name = names[0]
        body = {k: v for k, v in settings.items() if k in OPENAI_SETTINGS}
        body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        extra = {k: v for k, v in settings.items() if k not in OPENAI_SETTINGS}
        if tools:
            body["tools"] = tools
        response = self._call(
            lambda: self.client.chat.completions.create(
                model=self.name,
                messages=conversation,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=extra or None,
                **body,
            )
        )
        holder["stream"] = response
        calls: dict[int, dict] = {}
        first = last = None
        try:
            with self._errors(cancelled):
                for chunk in response:
                    if cancelled.is_set():
                        break
                    if chunk.choices:
                        last = time.perf_counter()
                        first = first or last
                    if chunk.usage is not None:
                        reply.prompt_tokens = chunk.usage.prompt_tokens
                        reply.completion_tokens = chunk.usage.completion_tokens
                    for choice in chunk.choices[:1]:
                        delta = choice.delta
                        extra_fields = delta.model_extra or {}
                        reasoning = extra_fields.get("reasoning_content") or extra_fields.get("reasoning") or ""
                        if reasoning or delta.content:
                            emit(reasoning, delta.content or "")
                        for call in delta.tool_calls or []:
                            _add_call_delta(calls, call)
                        if choice.finish_reason is not None:
                            reply.finish_reason = choice.finish_reason
        finally:
            response.close()
        reply.tool_calls = [calls[i] for i in sorted(calls)]
        reply.decode_s = last - first if first is not None else None


def _add_call_delta(calls: dict[int, dict], delta) -> None:
    call = calls.setdefault(delta.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if delta.id:
        call["id"] = delta.id
    if delta.function is not None:
        call["function"]["name"] += delta.function.name or ""
        call["function"]["arguments"] += delta.function.arguments or ""
