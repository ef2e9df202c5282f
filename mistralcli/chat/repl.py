"""The chat itself: turns in, answers out, every message stored as it happens (store.py), and in agent mode
the tool loop: the model's calls run here (a person approves the dangerous ones), their results go back
to it, until it answers or the round limit. Its input loop and slash commands are slash.py's."""

import json
import queue
import uuid

from mistralcli.chat.store import Message, Session, SessionStore
from mistralcli.chat.terminal import AnswerView
from mistralcli.errors import MistralError

RESULT_PREVIEW = 120  # characters of a tool's result shown


class Chat:
    """backend: LocalBackend or RemoteBackend; make_backend(spec) builds another (/model); out and err: rich
    consoles for stdout and stderr; tools: a ToolHost in agent mode, else None."""

    def __init__(
        self,
        store: SessionStore,
        backend,
        out,
        err,
        *,
        make_backend=None,
        session: Session | None = None,
        system: str | None = None,
        settings: dict | None = None,
        tools=None,
        max_tool_rounds: int = 10,
        stats: bool = True,
        markdown: bool = False,
    ):
        self.store = store
        self.backend = backend
        self.make_backend = make_backend
        self.out, self.err = out, err
        self.session = session
        self.system = session.system if session is not None else system
        self.settings = dict(session.params) if session is not None else {}
        self.settings.update(settings or {})
        if session is not None and settings:
            store.update_session(session, params=self.settings)
        self.tools = tools
        self.max_tool_rounds = max_tool_rounds
        self.show_stats = stats
        self.markdown = markdown
        self.input = None  # set by slash.run: where confirmations are asked
        self.always: set[str] = set()  # tools the person approved for the whole chat
        self.failures = 0  # answers that could not be had (a script's exit status)

    # ---- output
    def say(self, text: str, style: str = "dim") -> None:
        """A notice (stderr): never mixed into a script's answers."""
        self.err.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def error(self, text: str) -> None:
        self.err.print(f"error: {text}", style="red", markup=False, highlight=False, soft_wrap=True)

    def show(self, renderable) -> None:
        """What a command shows (stdout)."""
        self.out.print(renderable, highlight=False, markup=False)

    # ---- the session
    def ensure_session(self) -> Session:
        if self.session is None:
            self.session = self.store.create(model=self.backend.spec, system=self.system, params=self.settings)
        return self.session

    def set_system(self, text: str | None) -> None:
        self.system = text
        if self.session is not None:
            self.store.update_session(self.session, system=text)

    def set_settings(self, settings: dict) -> None:
        self.settings = settings
        if self.session is not None:
            self.store.update_session(self.session, params=settings)

    def switch(self, session: Session | None) -> None:
        """Continue in another session (None: a new one, made at the first message)."""
        self.session = session
        if session is not None:
            self.system, self.settings = session.system, dict(session.params)

    @property
    def messages(self) -> list[Message]:
        return self.session.messages if self.session is not None else []

    def conversation(self) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [m.openai() for m in self.messages]

    # ---- the turns
    def turn(self, text: str) -> None:
        session = self.ensure_session()
        user = self.store.append(session, Message("user", text))
        if not self.respond() and session.messages and session.messages[-1] is user:
            self.store.drop_from(session, user)  # nothing came of it: the message is not kept either
            if self.input is not None and self.input.interactive:
                self.say("(the message was not kept: ↑ recalls it)")

    def respond(self) -> bool:
        """Answer the conversation (the tool loop in agent mode); False when no answer came at all."""
        tools = self.tools.runner.openai_tools() if self.tools is not None else None
        for round_number in range(1, self.max_tool_rounds + 2):
            if tools and round_number > self.max_tool_rounds:
                self.say(
                    f"{self.max_tool_rounds} rounds of tool calls (--max-tool-rounds): now an answer without tools"
                )
            message = self._answer(tools if round_number <= self.max_tool_rounds else None)
            if message is None:
                return round_number > 1
            if message.partial or not message.tool_calls:
                return True
            if not self._run_calls(message.tool_calls):
                return True
        return True

    def _answer(self, tools) -> Message | None:
        """One answer, streamed and stored as it comes; Ctrl-C stops it and keeps what was shown."""
        session = self.session
        try:
            stream = self.backend.answer(self.conversation(), self.settings, tools)
        except (ValueError, MistralError) as exc:
            self.error(str(exc))
            self.failures += 1
            return None
        message = self.store.append(
            session, Message("assistant", "", model=self.backend.name, params=dict(self.settings), partial=True)
        )
        view = AnswerView(self.out, self.err, self.markdown)
        stopped = False
        try:
            for batch in stream.batches():
                message.content += "".join(c for _, c in batch)
                message.reasoning = (message.reasoning or "") + "".join(r for r, _ in batch) or None
                self.store.update(message)  # stored before it is shown: a kill loses nothing on the screen
                view.add(batch)
        except KeyboardInterrupt:
            stream.cancel()
            stopped = True
        finally:
            view.close()
        reply = self._wait(stream)
        message.model = self.backend.name
        message.prompt_tokens, message.completion_tokens = reply.prompt_tokens, reply.completion_tokens
        message.ttft_s, message.seconds, message.decode_s = reply.ttft_s, reply.seconds, reply.decode_s
        if stopped or reply.error is not None:
            if reply.error is not None:
                self.error(reply.error)
                self.failures += 1
            if not message.content and not message.reasoning:
                self.store.drop_from(session, message)
            else:
                self.store.update(message)  # partial, as it was shown
            if stopped and self.input is not None and not self.input.interactive:
                raise KeyboardInterrupt  # a script's Ctrl-C ends it (exit 130), what came kept
            if not message.content and not message.reasoning:
                return None
            self.say("[stopped: the answer so far is kept, marked cut short]" if stopped else "[cut short]")
            return message
        message.partial = False
        for call in reply.tool_calls:  # a server may leave them out; the results answer calls by id
            call["id"] = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        message.tool_calls = reply.tool_calls or None
        self.store.update(message)
        if self.show_stats:
            self.say(stats_line(message))
        return message

    def _wait(self, stream):
        while True:
            try:
                return stream.wait()
            except KeyboardInterrupt:
                stream.cancel()

    # ---- agent mode
    def _run_calls(self, calls: list[dict]) -> bool:
        """Run a round's calls, showing each; their results join the session. False when stopped."""
        from mistralcli.tools.loop import ToolCall

        events: queue.Queue = queue.Queue()
        todo = [ToolCall.of(c) for c in calls]
        future = self.tools.submit(todo, events.put)
        stopped = False
        try:
            while not (future.done() and events.empty()):
                try:
                    event = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._tool_event(event)
        except KeyboardInterrupt:
            future.cancel()
            stopped = True
        session = self.session
        if stopped or future.cancelled():
            for call in todo:
                self.store.append(session, Message("tool", "cancelled by the user", tool_call_id=call.id))
            self.say("[stopped: the tool calls were cancelled]")
            return False
        for outcome in future.result():
            message = outcome.message()
            self.store.append(session, Message("tool", message["content"], tool_call_id=message["tool_call_id"]))
        return True

    def _tool_event(self, event: dict) -> None:
        kind = event["type"]
        if kind == "tool_call":
            self.say(f"→ {event['name']}({_arguments(event['arguments'])})", style="cyan")
        elif kind == "tool_result":
            text = " ".join(str(event.get("content", "")).split())
            text = text if len(text) <= RESULT_PREVIEW else text[: RESULT_PREVIEW - 1] + "…"
            style = "dim" if event.get("outcome") == "ok" else "yellow"
            self.say(f"← {event['name']}: {event.get('outcome')}: {text}", style=style)
        elif kind == "approval_required":
            self.tools.decide(event["approval_id"], self._approve(event))

    def _approve(self, event: dict) -> bool:
        name = event["name"]
        if name in self.always:
            return True
        answer = self.input.confirm(f"Run {name}({_arguments(event['arguments'])})? [y/n/always] ")
        if answer is None:
            self.say(f"{name}: denied (no terminal to ask; --agent-permission auto runs it unasked)")
            return False
        if answer in ("a", "always"):
            self.always.add(name)
            return True
        return answer in ("y", "yes")


def stats_line(m: Message) -> str:
    """Tokens, time to the first token, and the decode speed (the tokens after the first over their time)."""
    parts = [f"{m.prompt_tokens or 0} prompt + {m.completion_tokens or 0} generated tokens"]
    if m.ttft_s is not None:
        parts.append(f"first token {m.ttft_s:.2f} s")
    if m.completion_tokens and m.completion_tokens > 1 and m.decode_s:
        parts.append(f"{(m.completion_tokens - 1) / m.decode_s:.1f} tok/s")
    return " · ".join(parts)


def _arguments(text: str) -> str:
    try:
        arguments = json.loads(text or "{}")
    except ValueError:
        return text
    if not isinstance(arguments, dict):
        return text
    shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    return shown if len(shown) <= 200 else shown[:199] + "…"
