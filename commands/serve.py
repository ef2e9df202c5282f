"""`mistral serve`: the OpenAI-compatible HTTP server (mistralcli/server)."""

import asyncio
import sys
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from pathlib import Path

import typer

from mistralcli.commands._common import (
    ISQ_HELP,
    MODEL_HELP,
    check_isq,
    kv_cache_dtype_option,
    load_with_status,
    model_option,
    stderr_console,
)

MODELS_HELP = (
    MODEL_HELP + " Repeat for several models in one server: the first loads at start, the others on their first "
    "request."
)


def serve(
    model: list[str] = model_option(MODELS_HELP),
    models_dir: list[Path] = typer.Option(
        None,
        "--models-dir",
        help="Also serve every model in this directory (GGUF files, model directories, one level down), each "
        "loaded on its first request.",
        show_default=False,
    ),
    max_loaded: int = typer.Option(
        None, "--max-loaded", min=1, help="Most models loaded at once (the least recently used idle one is unloaded)."
    ),
    max_memory: str = typer.Option(
        None,
        "--max-memory",
        help="Memory for the loaded models' weights and KV pools, e.g. 8GB or 512MiB. Default with several models: "
        "90% of the memory available at start.",
        show_default=False,
    ),
    keep_alive: str = typer.Option(
        None,
        "--keep-alive",
        help="Unload a model idle this long: 5m, 1h30m, 300 (seconds); -1 or never keeps it (the default). A "
        "request's keep_alive (Ollama's API) sets its model's.",
        show_default=False,
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free one)."),
    served_model_name: str = typer.Option(
        None, "--served-model-name", help="The model id clients name. Default: the model file's stem."
    ),
    max_num_seqs: int = typer.Option(16, "--max-num-seqs", min=1, help="Most requests computed at once."),
    max_num_batched_tokens: int = typer.Option(
        512, "--max-num-batched-tokens", min=1, help="Most tokens computed in one engine step."
    ),
    kv_cache_mb: float = typer.Option(
        None,
        "--kv-cache-mb",
        min=1.0,
        help="Each model's KV-cache pool. Default: 30% of available memory (split between the models loaded at once), "
        "at most what --max-num-seqs full contexts need.",
    ),
    kv_cache_dtype: str = kv_cache_dtype_option(),
    api_key: list[str] = typer.Option(None, "--api-key", help="Accept this API key (repeat for several)."),
    api_key_file: list[Path] = typer.Option(None, "--api-key-file", help="Accept the keys in this file, one a line."),
    rate_limit: str = typer.Option(
        None, "--rate-limit", help="Per key (or client address): REQUESTS[:TOKENS] per minute, e.g. 60:40000."
    ),
    cors: list[str] = typer.Option(None, "--cors", help="Allow browser requests from this origin ('*': any)."),
    log_requests: Path = typer.Option(None, "--log-requests", help="Append one JSON line per request to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No request log lines on stderr."),
    max_body_mb: float = typer.Option(4.0, "--max-body-mb", min=0.001, help="Largest request body."),
    shutdown_timeout: float = typer.Option(
        30.0, "--shutdown-timeout", min=0.0, help="On SIGINT/SIGTERM, seconds to let running requests finish."
    ),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for the kernels."),
    isq: str = typer.Option(None, "--isq", help=ISQ_HELP, show_default=False),
    tool_call_parser: str = typer.Option(
        None,
        "--tool-call-parser",
        help="How the model writes tool calls: hermes, mistral, llama3_json or json. Default: from its chat template.",
    ),
    reasoning_parser: str = typer.Option(
        None,
        "--reasoning-parser",
        help="How the model writes its reasoning (think, deepseek_r1), or none. Default: from its chat template.",
    ),
    mcp_config: Path = typer.Option(
        None, "--mcp-config", help="Run the tools of these MCP servers for the model (mistral.rs or Cursor shape)."
    ),
    enable_agent_tools: bool = typer.Option(
        False, "--enable-agent-tools", help="Run the agent tools (sandboxed ls, cat, grep, wc, ...) for the model."
    ),
    agent_sandbox_root: Path = typer.Option(
        Path("."), "--agent-sandbox-root", help="The agent tools see this directory only (read-only unless below)."
    ),
    agent_writable: list[Path] = typer.Option(
        None, "--agent-writable", help="A path under the sandbox root that write_file and edit_file may change."
    ),
    agent_shell: bool = typer.Option(False, "--agent-shell", help="Add the shell tool (time and output limits)."),
    agent_permission: str = typer.Option(
        "auto",
        "--agent-permission",
        help="Dangerous tools (shell, write_file, edit_file): auto (run), ask (wait for POST /v1/agent/approvals/ID) "
        "or deny.",
    ),
    agent_approval_timeout: float = typer.Option(
        60.0, "--agent-approval-timeout", min=0.1, help="With ask: seconds a call waits for its approval, then denied."
    ),
    max_tool_rounds: int = typer.Option(
        10, "--max-tool-rounds", min=1, help="Most rounds of tool calls the server runs for one chat completion."
    ),
    pooling: str = typer.Option(
        None,
        "--pooling",
        help="Also embed (/v1/embeddings, /api/embed) with a generating model, its final hidden states pooled: "
        "mean or last (an embedding model's own pooling is its config's; this replaces it: mean, cls or last).",
        show_default=False,
    ),
    allow_request_mcp: bool = typer.Option(
        False,
        "--allow-request-mcp",
        help='Let Responses API requests name MCP servers ({"type": "mcp", "server_url": ...}) that the server '
        "connects to and runs tools of.",
    ),
    responses_ttl: str = typer.Option(
        "30d",
        "--responses-ttl",
        help="How long the Responses API keeps a stored response: seconds, or 30d, 12h, 90m (never: until deleted).",
    ),
    responses_db: Path = typer.Option(
        None,
        "--responses-db",
        help="The SQLite file of stored responses (default: responses.sqlite3 in the data directory).",
        show_default=False,
    ),
    mcp_port: int = typer.Option(
        None,
        "--mcp-port",
        min=0,
        max=65535,
        help="Also serve the model as an MCP server (chat and complete tools) over streamable HTTP on this port, "
        "at /mcp.",
    ),
):
    """Serve a model over the OpenAI API (chat and text completions, the Responses API), Anthropic's Messages API
    and Ollama's API, streaming, on HOST:PORT.

    Example: mistral serve --port 8000, then
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hi"}]}'

    With tools the server runs itself: mistral serve --enable-agent-tools --agent-sandbox-root ./project

    Several models, loaded on demand, at most two at once, unloaded after 10 idle minutes:
    mistral serve -m a.gguf -m b.gguf --models-dir ~/models --max-loaded 2 --keep-alive 10m

    An embedding model: mistral serve -m ./all-MiniLM-L6-v2, then
    curl http://127.0.0.1:8000/v1/embeddings -d '{"input": ["Hi", "Hello"]}'
    """
    from mistralcli.reasoning import REASONING_PARSERS
    from mistralcli.server.limits import ApiKeys, RateLimit
    from mistralcli.tools import TOOL_CALL_PARSERS

    console = stderr_console()
    for value, choices, hint in (
        (tool_call_parser, list(TOOL_CALL_PARSERS), "--tool-call-parser"),
        (reasoning_parser, [*REASONING_PARSERS, "none"], "--reasoning-parser"),
    ):
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=hint)
    try:
        limit = RateLimit.parse(rate_limit) if rate_limit else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rate-limit") from None
    try:
        keys = ApiKeys(api_key, api_key_file)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--api-key-file") from None
    from mistralcli.tools.loop import PERMISSIONS

    if agent_permission not in PERMISSIONS:
        raise typer.BadParameter(
            f"{agent_permission!r} is not one of {', '.join(PERMISSIONS)}", param_hint="--agent-permission"
        )
    tools, mcp = _server_tools(
        mcp_config,
        enable_agent_tools,
        agent_sandbox_root,
        agent_writable or [],
        agent_shell,
        agent_permission,
        agent_approval_timeout,
    )
    from mistralcli.errors import MistralError
    from mistralcli.server.response_store import ResponseStore, parse_ttl

    try:
        ttl = parse_ttl(responses_ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--responses-ttl") from None
    try:
        responses = ResponseStore(responses_db, ttl)
    except MistralError as exc:
        raise typer.BadParameter(str(exc), param_hint="--responses-db") from None
    try:
        request_log = open(log_requests, "a", encoding="utf-8") if log_requests else None
    except OSError as exc:
        raise typer.BadParameter(f"{log_requests}: {exc.strerror}", param_hint="--log-requests") from None

    import dataclasses
    from functools import partial

    from mistralcli.engine.embedder import POOLINGS
    from mistralcli.engine.engine import EngineConfig
    from mistralcli.loading.discovery import file_identity
    from mistralcli.server.app import ServerSettings, ServerShared, serve_models
    from mistralcli.server.model_manager import load_for_serving, serving_parts
    from mistralcli.server.serve import serve_app

    if pooling is not None and pooling not in POOLINGS:
        raise typer.BadParameter(f"{pooling!r} is not one of {', '.join(POOLINGS)}", param_hint="--pooling")
    check_isq(isq)
    from mistralcli.loading.discovery import human_size
    from mistralcli.server.model_manager import parse_keep_alive, parse_size

    try:
        idle_s = parse_keep_alive(keep_alive) if keep_alive is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--keep-alive") from None
    try:
        budget = parse_size(max_memory) if max_memory is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-memory") from None
    entries = _model_entries(model or [], models_dir or [])
    if mcp_port is not None and not model:
        raise typer.BadParameter("it serves the first --model: give one", param_hint="--mcp-port")
    if served_model_name is not None:
        if len(entries) > 1:
            raise typer.BadParameter("it names one model; several are served", param_hint="--served-model-name")
        entries = [(served_model_name, *entries[0][1:])]
    several = len(entries) > 1
    at_once = min(len(entries), max_loaded or len(entries))
    if kv_cache_mb is None and at_once > 1:  # the single model's default share, split between those loaded at once
        from mistralcli.engine.engine import DEFAULT_KV_MEMORY_FRACTION, available_memory_bytes

        kv_cache_mb = DEFAULT_KV_MEMORY_FRACTION * available_memory_bytes() / at_once / 2**20
    if budget is None and several:
        from mistralcli.engine.engine import available_memory_bytes

        budget = int(0.9 * available_memory_bytes())
    config = EngineConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        kv_cache_mb=kv_cache_mb,
        kv_cache_dtype=kv_cache_dtype,
    )
    settings = ServerSettings(
        model_name=entries[0][0],
        api_keys=keys,
        rate_limit=limit,
        cors_origins=tuple(o for spec in cors or [] for o in spec.split(",") if o),
        max_body_bytes=int(max_body_mb * (1 << 20)),
        access_log=None if quiet else sys.stderr,
        request_log=request_log,
        tool_call_parser=tool_call_parser,
        reasoning_parser=reasoning_parser,
        tools=tools,
        max_tool_rounds=max_tool_rounds,
        responses=responses,
        request_mcp=allow_request_mcp,
    )
    shared = ServerShared(settings)
    manager = shared.models
    manager.max_loaded, manager.memory_budget, manager.keep_alive = max_loaded, budget, idle_s
    kv_bytes = int(kv_cache_mb * 2**20) if kv_cache_mb is not None else 0
    preload = bool(model) or not models_dir  # the first --model loads now; a --models-dir's models wait for a request
    loaded = None
    for number, (name, spec, path) in enumerate(entries):
        load = partial(load_for_serving, spec, config, threads, isq, pooling)
        size = (file_identity(path)[0] if path is not None else 0) + kv_bytes
        if number == 0 and preload:
            loaded = load_with_status(console, spec, threads, isq).with_pooling(pooling)
            engine, fields = serving_parts(loaded, config)
            state = shared.model_state(engine, dataclasses.replace(settings, model_name=name, **fields))
            # the MCP endpoint holds the first model's engine: it stays loaded (no loader, nothing unloads it)
            manager.add(name, None if mcp_port is not None else load, state=state, path=str(loaded.path))
        else:
            manager.add(name, load, size=size, path=str(path or spec))
    app = serve_models(shared)
    name = entries[0][0]
    engine = manager.find(None).state.engine if preload else None

    def ready(url: str):
        print(url, flush=True)  # stdout: the address alone, for scripts
        if several:
            shown = ", ".join(manager.names())
            limits = [f"at most {max_loaded} loaded" if max_loaded else "", f"{human_size(budget)} of memory"]
            if idle_s is not None:
                limits.append(f"unloaded after {idle_s:g} s idle")
            console.print(
                f"Serving {len(entries)} models at {url} ({shown}; {', '.join(x for x in limits if x)}). Ctrl+C stops.",
                highlight=False,
                markup=False,
            )
            return
        apis = "OpenAI, Anthropic and Ollama APIs" if engine is not None else "embeddings: OpenAI and Ollama APIs"
        console.print(f"Serving [bold]{name}[/bold] at {url} ({apis}). Ctrl+C stops.")
        if host not in ("127.0.0.1", "localhost", "::1") and not keys:
            console.print("warning: listening beyond this machine without --api-key")

    async def main():
        from mistralcli.tools.mcp_client import McpClients

        async with McpClients(mcp, tools.registry) if mcp is not None else nullcontext() as clients:
            if clients is not None:
                _report_servers(console, clients.statuses)
            if tools is not None:
                sources = sorted({t.source for t in tools.registry})
                console.print(
                    f"The server runs {len(tools.registry)} tools ({', '.join(sources) or 'none'}); "
                    f"dangerous ones: {agent_permission}.",
                    highlight=False,
                )
            async with _mcp_endpoint(console, app, name, loaded, host, mcp_port):
                await serve_app(app, host, port, shutdown_timeout=shutdown_timeout, on_ready=ready)

    try:
        asyncio.run(main())
    except OSError as exc:
        console.print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    finally:
        if request_log is not None:
            request_log.close()
    console.print("stopped")


def _model_entries(specs: list[str], directories: list[Path]) -> list[tuple[str, str | None, Path | None]]:
    """(name, spec for load_model, local path or None for a hub id) of each model to serve: the --model ones, then
    each directory's; none at all is the default model. A missing path or a name given twice is a usage error."""
    from mistralcli.loading.discovery import candidates
    from mistralcli.loading.loader import model_id
    from mistralcli.loading.resolve import is_hub_id

    entries = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.exists():
            entries.append((model_id(spec, path), str(path), path))
        elif is_hub_id(spec):
            entries.append((model_id(spec, path), spec, None))
        else:
            raise typer.BadParameter(
                f"{spec}: no such file or directory (nor a Hugging Face repo id)", param_hint="--model"
            )
    for directory in directories:
        if not directory.is_dir():
            raise typer.BadParameter(f"{directory}: not a directory", param_hint="--models-dir")
        found = candidates(directory)
        if not found:
            raise typer.BadParameter(
                f"{directory}: no models in it (.gguf files, or directories with config.json and safetensors)",
                param_hint="--models-dir",
            )
        entries += [(model_id(None, p), str(p), p) for p in found]
    if not entries:
        from mistralcli.errors import MistralError
        from mistralcli.loading.resolve import default_model_path

        try:
            path = default_model_path()
        except MistralError as exc:
            raise typer.BadParameter(str(exc), param_hint="--model") from None
        entries.append((model_id(None, path), None, path))
    names = [e[0] for e in entries]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise typer.BadParameter(f"two models are named {twice!r}; serve one of them", param_hint="--model")
    return entries


def _server_tools(mcp_config, agent_tools_on, root, writable, shell, permission, approval_timeout):
    """The tool runner of the server's tool loop (None: no tools) and the MCP config whose servers join it
    once started; a bad sandbox or config is a usage error."""
    from mistralcli.errors import MistralError
    from mistralcli.tools.loop import Approvals, ToolRunner
    from mistralcli.tools.mcp_config import load_config
    from mistralcli.tools.registry import ToolRegistry

    if not (agent_tools_on or mcp_config):
        for value, flag in ((writable, "--agent-writable"), (shell, "--agent-shell")):
            if value:
                raise typer.BadParameter("it needs --enable-agent-tools", param_hint=flag)
        return None, None
    registry = ToolRegistry()
    if agent_tools_on:
        from mistralcli.tools.agent_tools import agent_tools
        from mistralcli.tools.sandbox import SandboxConfig

        try:
            config = SandboxConfig(root=root, writable=list(writable), allow_shell=shell)
        except MistralError as exc:
            raise typer.BadParameter(str(exc), param_hint="--agent-sandbox-root") from None
        for tool in agent_tools(config):
            registry.add(tool)
    mcp = None
    if mcp_config is not None:
        try:
            mcp = load_config(mcp_config)
        except MistralError as exc:
            raise typer.BadParameter(str(exc), param_hint="--mcp-config") from None
    return ToolRunner(registry, permission=permission, approvals=Approvals(approval_timeout)), mcp


def _report_servers(console, statuses) -> None:
    for status in statuses:
        if status.ok:
            line = f"MCP server {status.id}: {status.num_tools} tools ({status.start_secs:.2f} s)"
        else:
            line = f"warning: MCP server {status.id} failed: {status.reason}"
        console.print(line, highlight=False, markup=False)


@asynccontextmanager
async def _mcp_endpoint(console, app, name: str, loaded, host: str, mcp_port: int | None):
    """With --mcp-port, the model over MCP (streamable HTTP) on the server's engine while the context lasts."""
    if mcp_port is None:
        yield
        return
    from mistralcli.tools.mcp_server import EngineBackend, build_server, serving_http

    engine = app.mistral_state.models.find(name).state.engine  # the first model, kept loaded (serve pins it)
    backend = EngineBackend(engine, name, loaded.chat_template, loaded.sampling_defaults)
    async with AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(
                serving_http(build_server(backend, log_level="WARNING"), host, mcp_port)
            )
        except OSError as exc:
            console.print(f"error: cannot listen on {host}:{mcp_port} (--mcp-port): {exc.strerror or exc}")
            raise typer.Exit(1) from None
        console.print(f"MCP server (streamable HTTP) at {url}", highlight=False)
        yield
