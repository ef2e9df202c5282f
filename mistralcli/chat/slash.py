"""The chat's input loop (`run`: each line a slash command or a turn) and its slash commands. Each command
takes the chat and the text after its name; run_command returns False to leave the chat. A mistake (an
unknown command, a bad value, a session that does not exist) is said and changes nothing."""

import difflib
import json
import shlex
import subprocess
import time
import types
import typing
from collections.abc import Callable
from contextlib import nullcontext

from mistralcli.chat.export import export_session
from mistralcli.chat.repl import Chat
from mistralcli.errors import MistralError

COMMANDS: dict[str, tuple[Callable, str, str]] = {}  # name -> (handler, usage, what it does)
ALIASES = {"/quit": "/exit", "/bye": "/exit", "/?": "/help", "/list": "/sessions", "/reset": "/clear"}
SETTING_ALIASES = {"repeat_penalty": "repetition_penalty", "num_predict": "max_tokens", "max_new_tokens": "max_tokens"}


def command(name: str, usage: str, what: str):
    def register(fn):
        COMMANDS[name] = (fn, usage, what)
        return fn

    return register


def names() -> list[str]:
    return [*COMMANDS, *ALIASES]


def run(chat: Chat, source) -> int:
    """Every turn from source (ScriptInput or TerminalInput) until its end or /exit; the exit status."""
    chat.input = source
    for text in source.turns():
        try:
            if text.startswith("/") and not text.startswith("//"):
                if not run_command(chat, text):
                    break
            else:
                chat.turn(text[1:] if text.startswith("//") else text)
        except KeyboardInterrupt:  # outside an answer (a command, loading a model): a person's chat goes on
            if not source.interactive:
                raise
            chat.say("[stopped]")
    return 1 if chat.failures and not source.interactive else 0


def run_command(chat: Chat, text: str) -> bool:
    name, _, argument = text.strip().partition(" ")
    name = ALIASES.get(name.lower(), name.lower())
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, names(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        chat.error(f"unknown command {name}{hint} (/help lists them)")
        return True
    try:
        return COMMANDS[name][0](chat, argument.strip()) is not False
    except MistralError as exc:
        chat.error(str(exc))
        return True


def _table(*columns: str):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


@command("/help", "/help", "these commands")
def _help(chat: Chat, argument: str):
    table = _table("command", "does")
    for _, usage, what in COMMANDS.values():
        table.add_row(usage, what)
    chat.show(table)
    chat.show(
        'A turn of several lines: open and close it with """, or press Alt+Enter (Esc, then Enter) for a new line.\n'
        "Ctrl-C stops an answer (what came is kept); Ctrl-D or /exit leaves. A message starting with / is sent "
        "as text when written //."
    )


@command("/exit", "/exit", "leave (also Ctrl-D, /quit, /bye)")
def _exit(chat: Chat, argument: str):
    return False


@command("/system", "/system [TEXT]", "set the system message (alone: show it; /system - removes it)")
def _system(chat: Chat, argument: str):
    if not argument:
        chat.show(chat.system or "(no system message)")
        return
    chat.set_system(None if argument == "-" else argument)
    chat.say("system message removed" if argument == "-" else "system message set")


@command("/set", "/set [NAME VALUE]", "set a sampling parameter (/set temperature 0.7; alone: show them)")
def _set(chat: Chat, argument: str):
    from mistralcli.chat.backend import check_settings, sampling_names

    known = sampling_names()
    if not argument:
        values = {**chat.backend.defaults(), **chat.settings}
        table = _table("parameter", "value", "")
        for name in known:
            if name in values:
                table.add_row(name, json.dumps(values[name]), "set" if name in chat.settings else "")
        chat.show(table)
        return
    name, _, value = argument.partition(" ")
    name = SETTING_ALIASES.get(name, name)
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else f" (it takes: {', '.join(known)})"
        raise MistralError(f"no parameter {name}{hint}")
    settings = dict(chat.settings)
    if value.strip().lower() in ("default", "unset"):
        settings.pop(name, None)
    else:
        settings[name] = _parse(name, known[name], value.strip())
    try:
        check_settings(settings)
    except ValueError as exc:
        raise MistralError(f"/set: {exc}") from None
    chat.set_settings(settings)
    chat.say(f"{name} = {json.dumps(settings[name])}" if name in settings else f"{name}: back to the default")


def _parse(name: str, kind, value: str):
    if not value:
        raise MistralError(f"/set {name} VALUE: give a value (or 'default')")
    args = typing.get_args(kind) if isinstance(kind, types.UnionType) else ()
    if type(None) in args and value.lower() in ("none", "null", "off"):
        return None
    kind = next((a for a in args if a is not type(None)), kind)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "on", "1", "yes")
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        if typing.get_origin(kind) is list:  # stop: one string, or a JSON list of them
            parsed = json.loads(value) if value.startswith("[") else shlex.split(value)
            if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
                raise ValueError
            return parsed
    except ValueError:
        what = {int: "a whole number", float: "a number", bool: "true or false"}.get(kind, "a list of strings")
        raise MistralError(f"/set {name}: {value!r} is not {what}") from None
    return value


@command("/clear", "/clear", "start a new session (the old one is kept: /sessions)")
def _clear(chat: Chat, argument: str):
    old = chat.session
    chat.switch(None)  # the system message and settings stay
    chat.say(f"new session (the last one is kept as {old.name})" if old is not None else "new session")


def _last_user(chat: Chat):
    return next((m for m in reversed(chat.messages) if m.role == "user"), None)


@command("/regen", "/regen", "answer the last message again")
def _regen(chat: Chat, argument: str):
    user = _last_user(chat)
    if user is None:
        raise MistralError("nothing to answer again yet")
    later = [m for m in chat.session.messages if m.id > user.id]
    if later:
        chat.store.drop_from(chat.session, later[0])
    chat.respond()


@command("/undo", "/undo", "drop the last exchange (your message and its answer)")
def _undo(chat: Chat, argument: str):
    user = _last_user(chat)
    if user is None:
        raise MistralError("nothing to undo")
    chat.store.drop_from(chat.session, user)
    chat.say(f"dropped: {_short(user.content)}")


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@command("/save", "/save [NAME]", "keep a copy of this session as NAME (every turn is stored anyway)")
def _save(chat: Chat, argument: str):
    session = chat.ensure_session()
    if not argument:
        chat.say(f"every turn is stored as it happens, in session {session.name} (/save NAME keeps a copy)")
        return
    copy = chat.store.copy(session, argument)
    chat.say(f"saved a copy as {copy.name} ({len(copy.messages)} messages); you are still in {session.name}")


@command("/load", "/load NAME", "continue a stored session")
def _load(chat: Chat, argument: str):
    if not argument:
        raise MistralError("/load NAME: which session? (/sessions lists them)")
    session = chat.store.get(argument)
    chat.switch(session)
    replay(chat, session)


def replay(chat: Chat, session, last: int = 10) -> None:
    """The end of a session as it was, when it is opened again."""
    from rich.markdown import Markdown

    shown = [m for m in session.messages if m.role in ("user", "assistant") and m.content]
    more = f", the last {last}:" if len(shown) > last else ""
    chat.say(f"session {session.name}: {len(session.messages)} messages{more}")
    for m in shown[-last:]:
        if m.role == "user":
            chat.show(f">>> {m.content}")
        else:
            chat.show(Markdown(m.content) if chat.markdown else m.content)
            if m.partial:
                chat.say("[cut short]")


def sessions_table(store, current=None):
    """The stored sessions, the last used first, `current` marked (also `mistral chat --list`)."""
    table = _table("name", "messages", "model", "last used")
    for s in store.sessions():
        mark = " *" if current is not None and s.id == current.id else ""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
        table.add_row(s.name + mark, str(store.count(s)), s.model or "default", when)
    return table


@command("/sessions", "/sessions", "the stored sessions, the last used first")
def _sessions(chat: Chat, argument: str):
    table = sessions_table(chat.store, chat.session)
    chat.show(table if table.row_count else "(no sessions yet)")


@command("/delete", "/delete NAME", "delete a stored session")
def _delete(chat: Chat, argument: str):
    if not argument:
        raise MistralError("/delete NAME: which session? (/sessions lists them)")
    session = chat.store.get(argument)
    chat.store.delete(argument)
    if chat.session is not None and chat.session.id == session.id:
        chat.switch(None)
    chat.say(f"deleted {argument}")


@command("/rename", "/rename NAME", "rename this session")
def _rename(chat: Chat, argument: str):
    if not argument:
        raise MistralError("/rename NAME: what name?")
    session = chat.ensure_session()
    old = session.name
    chat.store.rename(session, argument)
    chat.say(f"{old} is now {argument}")


@command("/model", "/model [NAME]", "switch to another model, keeping the conversation (alone: the current)")
def _model(chat: Chat, argument: str):
    if not argument:
        chat.show(chat.backend.describe())
        return
    if chat.backend.remote:
        served = chat.backend.models()
        if argument not in served:
            raise MistralError(f"the server has no model {argument!r} (it has: {', '.join(served)})")
        chat.backend.name = chat.backend.spec = argument
    else:
        from mistralcli.loading.discovery import discover

        found = {m.name: m for m in discover()}
        spec = str(found[argument].path) if argument in found else argument
        with chat.err.status(f"Loading {argument}…") if chat.err.is_terminal else nullcontext():
            backend = chat.make_backend(None if argument == "default" else spec)
        chat.backend = backend
    if chat.session is not None:
        chat.store.update_session(chat.session, model=chat.backend.spec)
    chat.say(f"now chatting with {chat.backend.describe()}")


@command("/models", "/models", "the models you can switch to")
def _models(chat: Chat, argument: str):
    if chat.backend.remote:
        for name in chat.backend.models():
            chat.show(name + (" *" if name == chat.backend.name else ""))
        return
    from mistralcli.loading.discovery import discover, human_size

    table = _table("name", "size", "architecture", "quantization", "where")
    current = getattr(chat.backend, "loaded", None)
    for m in discover():
        mark = " *" if current is not None and m.path.resolve() == current.path.resolve() else ""
        table.add_row(m.name + mark, human_size(m.size), m.architecture or "?", m.quantization or "?", m.source)
    chat.show(table if table.row_count else "(no models found)")


@command("/tools", "/tools", "the tools the model may call (agent mode)")
def _tools(chat: Chat, argument: str):
    if chat.tools is None:
        chat.show("agent mode is off (mistral chat --agent --sandbox-root DIR)")
        return
    table = _table("tool", "asks first", "does")
    for tool in chat.tools.registry:
        table.add_row(tool.name, "yes" if tool.dangerous else "", (tool.description or "").split("\n")[0])
    chat.show(table)


@command("/export", "/export FILE", "write this session to FILE (.md or .json)")
def _export(chat: Chat, argument: str):
    if not argument:
        raise MistralError("/export FILE: where to? (a .md or .json file)")
    if chat.session is None:
        raise MistralError("nothing to export yet")
    kind = export_session(chat.session, argument)
    chat.say(f"wrote {argument} ({kind})")


@command("/copy", "/copy", "copy the last answer to the clipboard")
def _copy(chat: Chat, argument: str):
    from mistralcli.chat.terminal import clipboard_copy

    answer = next((m for m in reversed(chat.messages) if m.role == "assistant" and m.content), None)
    if answer is None:
        raise MistralError("no answer to copy yet")
    try:
        where = clipboard_copy(answer.content)
    except (OSError, subprocess.SubprocessError) as exc:
        raise MistralError(f"/copy: {exc}") from None
    chat.say(f"copied the last answer ({len(answer.content)} characters) to {where}")


@command("/stats", "/stats [on|off]", "the stats line after each answer on or off (alone: the session's totals)")
def _stats(chat: Chat, argument: str):
    if argument in ("on", "off"):
        chat.show_stats = argument == "on"
        chat.say(f"stats {argument}")
        return
    if argument:
        raise MistralError(f"/stats {argument}: say on or off")
    answers = [m for m in chat.messages if m.role == "assistant" and m.completion_tokens is not None]
    if not answers:
        chat.show("no answers yet in this session")
        return
    prompt = sum(m.prompt_tokens or 0 for m in answers)
    generated = sum(m.completion_tokens for m in answers)
    ttfts = [m.ttft_s for m in answers if m.ttft_s is not None]
    timed = [m for m in answers if m.decode_s and m.completion_tokens > 1]
    rate = sum(m.completion_tokens - 1 for m in timed) / sum(m.decode_s for m in timed) if timed else 0.0
    seconds = sum(m.seconds or 0.0 for m in answers)
    chat.show(
        f"{len(answers)} answers: {prompt} prompt + {generated} generated tokens in {seconds:.1f} s · first token "
        f"{sum(ttfts) / max(1, len(ttfts)):.2f} s on average · {rate:.1f} tok/s decoding"
    )
