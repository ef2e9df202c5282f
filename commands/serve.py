"""`mistral serve`: the OpenAI-compatible HTTP server (mistralcli/server)."""

import asyncio
import sys
from contextlib import nullcontext
from pathlib import Path

import typer

from mistralcli.commands._common import MODEL_HELP, stderr_console


def serve(
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP, show_default=False),
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
        help="KV-cache pool size. Default: 30% of available memory, at most what --max-num-seqs full contexts need.",
    ),
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
):
    """Serve a model over the OpenAI API (chat and text completions, streaming) on HOST:PORT.

    Example: mistral serve --port 8000, then
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hi"}]}'
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
    try:
        request_log = open(log_requests, "a", encoding="utf-8") if log_requests else None
    except OSError as exc:
        raise typer.BadParameter(f"{log_requests}: {exc.strerror}", param_hint="--log-requests") from None

    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.loading.loader import load_model
    from mistralcli.server.app import ServerSettings, make_app
    from mistralcli.server.serve import serve_app

    with console.status("Loading model…", spinner="dots") if console.is_terminal else nullcontext():
        loaded = load_model(model, threads=threads)
        engine = Engine(
            loaded.model,
            loaded.tokenizer,
            loaded.context_length,
            EngineConfig(
                max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, kv_cache_mb=kv_cache_mb
            ),
        )
    name = served_model_name or loaded.name
    settings = ServerSettings(
        model_name=name,
        chat_template=loaded.chat_template,
        sampling_defaults=loaded.sampling_defaults,
        api_keys=keys,
        rate_limit=limit,
        cors_origins=tuple(o for spec in cors or [] for o in spec.split(",") if o),
        max_body_bytes=int(max_body_mb * (1 << 20)),
        access_log=None if quiet else sys.stderr,
        request_log=request_log,
        tool_call_parser=tool_call_parser,
        reasoning_parser=reasoning_parser,
    )
    app = make_app(engine, settings)

    def ready(url: str):
        print(url, flush=True)  # stdout: the address alone, for scripts
        console.print(f"Serving [bold]{name}[/bold] at {url}/v1 (OpenAI API). Ctrl+C stops.")
        if host not in ("127.0.0.1", "localhost", "::1") and not keys:
            console.print("warning: listening beyond this machine without --api-key")

    try:
        asyncio.run(serve_app(app, host, port, shutdown_timeout=shutdown_timeout, on_ready=ready))
    except OSError as exc:
        console.print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    finally:
        if request_log is not None:
            request_log.close()
    console.print("stopped")
