"""`mistral chat`: the terminal chat, over the model in this process or a server (--url), with sessions kept in
SQLite and, with --agent, the agent tools."""

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import typer

from mistralcli.commands._common import (
    ISQ_HELP,
    TensorProgress,
    check_isq,
    model_option,
    stderr_console,
)


def chat(
    model: str = model_option(),
    continue_last: bool = typer.Option(False, "--continue", "-c", help="Continue the last session."),
    session_name: str = typer.Option(
        None, "--session", help="Open the session of this name, or start one by that name.", show_default=False
    ),
    list_sessions: bool = typer.Option(False, "--list", help="List the stored sessions and exit (no model is loaded)."),
    export: tuple[str, str] = typer.Option(
        None,
        "--export",
        metavar="NAME FILE",
        help="Write session NAME to FILE (.md or .json) and exit (no model is loaded).",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="With --list: one JSON object per session."),
    system: str = typer.Option(
        None,
        "--system",
        "-s",
        help="System message (of a new session, or now of the one continued).",
        show_default=False,
    ),
    temperature: float = typer.Option(None, "--temperature", "-t", min=0.0, help="Sampling temperature (0: greedy)."),
    max_tokens: int = typer.Option(None, "--max-tokens", "-n", min=1, help="Most tokens per answer (default 1024)."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    url: str = typer.Option(
        None,
        "--url",
        help="Chat with a running server that speaks OpenAI's API (mistral serve, vLLM, llama-server, ...) "
        "instead of loading a model here.",
        show_default=False,
    ),
    api_key: str = typer.Option(
        None, "--api-key", help="The server's API key (default: $MISTRALCLI_API_KEY, else $OPENAI_API_KEY)."
    ),
    agent: bool = typer.Option(False, "--agent", help="Agent mode: the model may call the sandboxed agent tools."),
    sandbox_root: Path = typer.Option(
        None, "--sandbox-root", help="Agent mode: the tools see this directory only (read-only unless --writable)."
    ),
    writable: list[Path] = typer.Option(
        None, "--writable", help="Agent mode: a path under the sandbox root that write_file and edit_file may change."
    ),
    shell: bool = typer.Option(
        False, "--shell", help="Agent mode: add the shell tool (a dangerous one: see --agent-permission)."
    ),
    mcp_config: Path = typer.Option(None, "--mcp-config", help="Agent mode: add these MCP servers' tools."),
    agent_permission: str = typer.Option(
        "ask",
        "--agent-permission",
        help="Agent mode, the dangerous tools (shell, write_file, edit_file): ask (y/n/always), auto (run) or deny.",
    ),
    max_tool_rounds: int = typer.Option(10, "--max-tool-rounds", min=1, help="Agent mode: most rounds of calls."),
    no_stats: bool = typer.Option(False, "--no-stats", help="No stats line after each answer (/stats on brings it)."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for the kernels."),
    isq: str = typer.Option(None, "--isq", help=ISQ_HELP, show_default=False),
):
    """Chat with a model in the terminal; every turn is kept (mistral chat -c continues the last session).

    Example: mistral chat   |   mistral chat -c   |   mistral chat --session work -m model.gguf

    Against a server: mistral chat --url http://127.0.0.1:8080

    Agent mode: mistral chat --agent --sandbox-root ./project   (the model reads files there; /tools lists them)

    Scripted: printf 'Hi!\\n/set temperature 0\\nWhat is 2+2?\\n' | mistral chat   (answers on stdout, one per line
    of input; \"\"\" opens and closes a turn of several lines)

    /help in the chat lists its commands (/system, /set, /regen, /undo, /save, /load, /model, /export, ...).
    """
    from mistralcli.chat.store import SessionStore

    exporting = export is not None and export != (None, None)
    if continue_last and session_name:
        raise typer.BadParameter("give one of -c (the last session) and --session NAME", param_hint="--continue")
    if url is None and api_key is not None:
        raise typer.BadParameter("it needs --url", param_hint="--api-key")
    if url is not None and isq is not None:
        raise typer.BadParameter("a server's model is the server's: --isq is for a local one", param_hint="--isq")
    check_isq(isq)
    if not agent:
        for value, flag in [
            (sandbox_root, "--sandbox-root"),
            (writable, "--writable"),
            (shell, "--shell"),
            (mcp_config, "--mcp-config"),
        ]:
            if value:
                raise typer.BadParameter("it needs --agent", param_hint=flag)
    if agent_permission not in ("ask", "auto", "deny"):
        raise typer.BadParameter(f"{agent_permission!r} is not one of ask, auto, deny", param_hint="--agent-permission")
    settings = {
        k: v for k, v in {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}.items() if v is not None
    }

    store = SessionStore()
    with store:
        if list_sessions:
            _list(store, as_json)
            return
        if exporting:
            from mistralcli.chat.export import export_session

            kind = export_session(store.get(export[0]), export[1])
            stderr_console().print(f"wrote {export[1]} ({kind})", highlight=False, markup=False)
            return
        session = None
        if continue_last:
            session = store.last()
            if session is None:
                stderr_console().print("no session to continue yet: starting a new one", style="dim")
        elif session_name:
            known = {s.name for s in store.sessions()}
            session = store.get(session_name) if session_name in known else store.create(session_name, system=system)
        if session is not None and system is not None and system != session.system:
            store.update_session(session, system=system)
        tools = _agent_tools(sandbox_root, writable or [], shell, mcp_config, agent_permission) if agent else None
        try:
            raise typer.Exit(
                _chat(
                    store,
                    session,
                    model,
                    url,
                    api_key,
                    (threads, isq),
                    system,
                    settings,
                    tools,
                    max_tool_rounds,
                    not no_stats,
                )
            )
        finally:
            if tools is not None:
                tools.close()


def _chat(store, session, model, url, api_key, load, system, settings, tools, max_tool_rounds, stats) -> int:
    """load: (threads, isq) for a local model."""
    from rich.console import Console

    from mistralcli.chat.backend import LocalBackend, RemoteBackend
    from mistralcli.chat.repl import Chat
    from mistralcli.chat.slash import names, replay, run
    from mistralcli.chat.store import default_store_path
    from mistralcli.chat.terminal import ScriptInput, TerminalInput

    no_color = "NO_COLOR" in os.environ
    # a pipe gets lines as long as they are (a script reads them), a terminal its width
    out = Console(no_color=no_color) if sys.stdout.isatty() else Console(no_color=no_color, width=1000)
    err = stderr_console()
    spec = model if model is not None else (session.model if session is not None else None)
    if url is not None:
        backend = RemoteBackend(url, api_key, spec)
        make_backend = None
    else:
        threads, isq = load

        def make_backend(spec):
            if isq is not None:
                with TensorProgress(err, f"Quantizing to {isq.upper()}") as advance:
                    return LocalBackend(spec, threads=threads, isq=isq, progress=advance)
            with err.status("Loading model…", spinner="dots") if err.is_terminal else nullcontext():
                return LocalBackend(spec, threads=threads)

        backend = make_backend(spec)
    if session is not None and model is not None and session.model != backend.spec:
        store.update_session(session, model=backend.spec)
    interactive = sys.stdin.isatty()
    chat = Chat(
        store,
        backend,
        out,
        err,
        make_backend=make_backend,
        session=session,
        system=system,
        settings=settings,
        tools=tools,
        max_tool_rounds=max_tool_rounds,
        stats=stats,
        markdown=out.is_terminal and not no_color,
    )
    if interactive:
        what = f"session {session.name}" if session is not None else "a new session"
        err.print(
            f"Chatting with {backend.describe()}, {what}. /help for commands, Ctrl-D to leave.",
            style="dim",
            highlight=False,
            markup=False,
        )
        if tools is not None:
            err.print(f"Agent mode: {len(tools.registry)} tools (/tools lists them).", style="dim", highlight=False)
        if session is not None and session.messages:
            replay(chat, session)
        source = TerminalInput(default_store_path().parent / "chat_history", names())
    else:
        source = ScriptInput()
    return run(chat, source)


def _list(store, as_json: bool) -> None:
    from mistralcli.commands._common import write_stdout

    sessions = store.sessions()
    if as_json:
        for s in sessions:
            row = {"name": s.name, "messages": store.count(s), "model": s.model, "created": s.created}
            write_stdout(json.dumps({**row, "updated": s.updated}, ensure_ascii=False) + "\n")
        return
    if not sessions:
        stderr_console().print("no sessions yet (mistral chat starts one)", style="dim")
        return
    from rich.console import Console

    from mistralcli.chat.slash import sessions_table

    Console(no_color="NO_COLOR" in os.environ).print(sessions_table(store))


def _agent_tools(root, writable, shell, mcp_config, permission):
    from mistralcli.errors import MistralError
    from mistralcli.tools.host import ToolHost
    from mistralcli.tools.sandbox import SandboxConfig

    if root is None:
        raise typer.BadParameter("agent mode needs a sandbox: --sandbox-root DIR", param_hint="--agent")
    try:
        config = SandboxConfig(root=root, writable=list(writable), allow_shell=shell)
    except MistralError as exc:
        raise typer.BadParameter(str(exc), param_hint="--sandbox-root") from None
    if mcp_config is not None and not mcp_config.is_file():
        raise typer.BadParameter(f"{mcp_config}: no such file", param_hint="--mcp-config")
    host = ToolHost(agent_tools=config, mcp_config=mcp_config, permission=permission)
    for status in host.statuses:
        if not status.ok:
            stderr_console().print(f"warning: MCP server {status.id} failed: {status.reason}", highlight=False)
    return host
