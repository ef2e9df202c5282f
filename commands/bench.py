"""`mistral bench`: offline prefill/decode/TTFT/RSS figures, optionally against llama.cpp."""

import importlib.util
import json
import os
import subprocess
import sys
from contextlib import nullcontext

import typer

from mistralcli.commands._common import kv_cache_dtype_option, model_option, stderr_console

PEERS = ("llama-cpp",)
EMBED_PEERS = ("sentence-transformers",)


def _lengths(value: str) -> list[int]:
    try:
        lengths = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("a comma-separated list of token counts, e.g. 128,512") from None
    if not lengths or min(lengths) < 1:
        raise typer.BadParameter("token counts must be >= 1")
    return lengths


def bench(
    model: str = model_option(),
    prompt_tokens: str = typer.Option(
        "128,512", "--prompt-tokens", "-p", help="Prompt lengths to prefill, comma-separated."
    ),
    gen_tokens: int = typer.Option(
        128, "--gen-tokens", "-n", min=1, help="Tokens to decode (after a 16-token prompt)."
    ),
    repetitions: int = typer.Option(
        5, "--repetitions", "-r", min=1, help="Measured runs of each figure (after one warm-up)."
    ),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: all cores)."),
    compare: str = typer.Option(None, "--compare", help="Measure a peer in the same run: llama-cpp."),
    concurrency: str = typer.Option(
        None,
        "--concurrency",
        "-c",
        help="Concurrent requests through the engine, comma-separated (e.g. 1,4,16): "
        "aggregate and per-stream tok/s, TTFT and inter-token latency, "
        "with a prompt of the first --prompt-tokens length.",
    ),
    structured: bool = typer.Option(
        False,
        "--structured",
        help="With --concurrency: measure each level also under a nested JSON schema (or --json-schema's), "
        "in the same run, and report the constrained requests' cost in tok/s.",
    ),
    json_schema: str = typer.Option(
        None,
        "--json-schema",
        help="The schema for --structured: a file, or the schema itself ({...}).",
        show_default=False,
    ),
    url: list[str] = typer.Option(
        None,
        "--url",
        help="Benchmark the OpenAI-compatible server at this address over HTTP, at "
        "--concurrency (default 1,4,16); NAME=URL names it. Repeat to compare servers.",
    ),
    serve: bool = typer.Option(False, "--serve", help="Start `mistral serve` on --model and benchmark it over HTTP."),
    api_key: str = typer.Option(None, "--api-key", help="Bearer key for --url servers."),
    load_test: bool = typer.Option(
        False,
        "--load-test",
        help="Keep --clients busy against --url (or a started `mistral serve`) for --duration, some hanging up; "
        "exit 1 on any 5xx, lost or hung request, KV block left in use, or slow /health.",
    ),
    clients: int = typer.Option(64, "--clients", min=1, help="Load test: clients at once."),
    disconnect: float = typer.Option(
        0.2, "--disconnect", min=0.0, max=1.0, help="Load test: share of streams that hang up mid-way."
    ),
    duration: float = typer.Option(180.0, "--duration", min=0.1, help="Load test: seconds of load."),
    request_timeout: float = typer.Option(
        300.0, "--request-timeout", min=0.1, help="Load test: a request slower than this counts as hung."
    ),
    health_p99_ms: float = typer.Option(
        50.0, "--health-p99-ms", min=0.0, help="Load test: the /health latency p99 to stay under."
    ),
    max_num_seqs: int = typer.Option(16, "--max-num-seqs", min=1, help="Load test: the started server's batch."),
    seed: int = typer.Option(0, "--seed", help="Load test: seed of the clients' random choices."),
    embed: int = typer.Option(
        None, "--embed", min=1, help="Embed this many sentences: sentences/s (peer: sentence-transformers)."
    ),
    pooling: str = typer.Option(None, "--pooling", help="--embed with a generating model: mean or last."),
    kv_cache_dtype: str = kv_cache_dtype_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
):
    """Measure load time, prefill and decode speed, time to first token and peak memory.

    Example: mistral bench --prompt-tokens 128,512 --gen-tokens 128 --compare llama-cpp

    Example: mistral bench --concurrency 1,4,16 --prompt-tokens 128 --gen-tokens 64 --json

    Example: mistral bench --concurrency 1,16 --structured   (a JSON schema's cost: the same requests, constrained)

    Example: mistral bench --serve --url llama-server=http://127.0.0.1:8080 --concurrency 1,4,16 -p 128 -n 64

    Example: mistral bench --load-test --clients 64 --disconnect 0.2 --duration 180

    Example: mistral bench --embed 1000 -m ./all-MiniLM-L6-v2 --compare sentence-transformers
    """
    if embed is not None:
        return _bench_embed(model, embed, threads, repetitions, compare, pooling, as_json)
    lengths = _lengths(prompt_tokens)
    if kv_cache_dtype != "f32" and (load_test or (url and not serve)):
        raise typer.BadParameter(
            "sets the cache of an engine this command runs (offline, --concurrency, --serve)",
            param_hint="--kv-cache-dtype",
        )
    if load_test:
        if len(url or []) > 1 or compare is not None or concurrency is not None:
            raise typer.BadParameter(
                "takes at most one --url, and not --compare or --concurrency", param_hint="--load-test"
            )
        from mistralcli.bench.loadtest import load_test as run_load_test

        target = _url(url[0])[1] if url else None
        code = run_load_test(
            target,
            model,
            threads,
            max_num_seqs,
            clients,
            disconnect,
            duration,
            request_timeout,
            health_p99_ms,
            api_key,
            seed,
            as_json,
        )
        raise typer.Exit(code)
    if url or serve:
        if compare is not None:
            raise typer.BadParameter(
                "not with --url or --serve (name the peer's server with --url)", param_hint="--compare"
            )
        targets = [_url(spec) for spec in url or []]
        levels = _lengths(concurrency) if concurrency is not None else [1, 4, 16]
        settings = (lengths[0], gen_tokens, repetitions, threads, api_key, as_json, kv_cache_dtype)
        return _bench_http(model, serve, targets, levels, *settings)
    if (structured or json_schema is not None) and (concurrency is None or url or serve or load_test):
        raise typer.BadParameter("needs --concurrency (the offline engine)", param_hint="--structured")
    if concurrency is not None:
        levels = _lengths(concurrency)
        if compare is not None:
            raise typer.BadParameter("not with --concurrency", param_hint="--compare")
        constraint = _bench_constraint(json_schema) if structured or json_schema is not None else None
        return _bench_concurrency(
            model, levels, lengths[0], gen_tokens, repetitions, threads, as_json, constraint, kv_cache_dtype
        )
    if compare is not None and compare not in PEERS:
        raise typer.BadParameter(f"unknown peer {compare!r} (known: {', '.join(PEERS)})", param_hint="--compare")
    if compare == "llama-cpp" and importlib.util.find_spec("llama_cpp") is None:
        from mistralcli.errors import MistralError

        raise MistralError("--compare llama-cpp needs llama-cpp-python: pip install llama-cpp-python")

    from mistralcli._ext import qmatmul
    from mistralcli.bench import figures, offline

    console = stderr_console()
    threads = threads or os.cpu_count() or 1
    say = console.print if not as_json or console.is_terminal else (lambda *_: None)
    with console.status("benchmarking mistralcli…") if console.is_terminal else nullcontext():
        ours, loaded = offline.bench_mistralcli(
            model, lengths, gen_tokens, repetitions, threads, progress=say, kv_cache_dtype=kv_cache_dtype
        )
    say("[dim]measuring memory bandwidth…[/dim]")  # after ours: its buffer must not count in our peak RSS
    bandwidth = offline.measure_bandwidth(threads)
    bytes_token = offline.bytes_per_token(loaded.model)
    roofline = bandwidth * 1e9 / bytes_token
    result = {
        "mode": "offline",
        "model": loaded.name,
        "model_path": str(loaded.path),
        "model_bytes": loaded.path.stat().st_size,
        "machine": {
            "threads": threads,
            "cpu_count": os.cpu_count(),
            "simd": qmatmul.simd_name(),
            "memory_bandwidth_gb_s": bandwidth,
        },
        "decode_bytes_per_token": bytes_token,
        "decode_roofline_tok_s": roofline,
        "decode_roofline_fraction": ours.decode_tok_s["median"] / roofline,
        "settings": {
            "prompt_tokens": lengths,
            "gen_tokens": gen_tokens,
            "repetitions": repetitions,
            "kv_cache_dtype": kv_cache_dtype,
        },
        "engines": {"mistralcli": ours.to_dict()},
    }
    peer = None
    if compare == "llama-cpp":
        with console.status("benchmarking llama.cpp…") if console.is_terminal else nullcontext():
            peer = _run_llama_cpp(str(loaded.path), threads, gen_tokens, repetitions, lengths)
        result["engines"]["llama.cpp"] = peer.to_dict()
        result["ratios_vs_llama_cpp"] = figures.ratios(ours, peer)
    if as_json:
        print(json.dumps(result))
    else:
        _print_table(result, ours, peer)


def _bench_constraint(json_schema: str | None):
    """The StructuredOutputs of --structured: --json-schema's schema, or the built-in nested one."""
    from mistralcli.bench.concurrency import BENCH_SCHEMA
    from mistralcli.commands._structured import structured_option
    from mistralcli.structured import StructuredOutputs

    if json_schema is None:
        return StructuredOutputs(json=BENCH_SCHEMA)
    return structured_option(json_schema, False, None, None)


def _bench_concurrency(
    model, levels, prompt_len, gen_tokens, repetitions, threads, as_json, structured=None, kv_cache_dtype="f32"
):
    import time

    from mistralcli._ext import qmatmul
    from mistralcli.bench.concurrency import bench_concurrency
    from mistralcli.bench.figures import peak_rss_mib
    from mistralcli.loading.loader import load_model

    console = stderr_console()
    threads = threads or os.cpu_count() or 1
    say = console.print if not as_json or console.is_terminal else (lambda *_: None)
    start = time.perf_counter()
    loaded = load_model(model, threads=threads)
    load_s = time.perf_counter() - start
    with console.status("benchmarking concurrent requests…") if console.is_terminal else nullcontext():
        figures = bench_concurrency(
            loaded, levels, prompt_len, gen_tokens, repetitions, say, structured, kv_cache_dtype
        )
    extra = {}
    if structured is not None:
        extra = {"structured": {"schema": structured.json, **figures}}
        figures = figures["free"]
    result = {
        "mode": "offline",
        "model": loaded.name,
        "model_path": str(loaded.path),
        "machine": {"threads": threads, "cpu_count": os.cpu_count(), "simd": qmatmul.simd_name()},
        "settings": {
            "concurrency": levels,
            "prompt_tokens": prompt_len,
            "gen_tokens": gen_tokens,
            "repetitions": repetitions,
            "kv_cache_dtype": kv_cache_dtype,
        },
        "engines": {
            "mistralcli": {
                "engine": "mistralcli",
                "load_s": load_s,
                "concurrency": figures,
                **extra,
                "peak_rss_mib": peak_rss_mib(),
            }
        },
    }
    if as_json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{result['model']} · {threads} threads · prompt {prompt_len}, {gen_tokens} generated per request"
    )
    for column in ("requests", *CONCURRENCY_COLUMNS, "engine overhead"):
        table.add_column(column, justify="right")
    for n, f in figures.items():
        table.add_row(n, *_concurrency_cells(f), f"{100 * f['engine_overhead_fraction']:.1f}%")
        if extra:
            g = extra["structured"]["structured"][n]
            table.add_row(f"{n}, JSON schema", *_concurrency_cells(g), f"{100 * g['engine_overhead_fraction']:.1f}%")
    out = Console(no_color="NO_COLOR" in os.environ)
    out.print(table)
    if extra:
        costs = extra["structured"]["cost"]
        out.print(
            "structured output costs "
            + ", ".join(f"{100 * c:.1f}% of the tok/s at {n} requests" for n, c in costs.items())
            + " (the same requests, free and under the schema, in this run)"
        )


def _bench_embed(model, count, threads, repetitions, compare, pooling, as_json):
    from mistralcli.bench import embeddings
    from mistralcli.engine.embedder import POOLINGS
    from mistralcli.errors import MistralError

    if compare is not None and compare not in EMBED_PEERS:
        message = f"unknown peer {compare!r} for --embed (known: {', '.join(EMBED_PEERS)})"
        raise typer.BadParameter(message, param_hint="--compare")
    if pooling is not None and pooling not in POOLINGS:
        raise typer.BadParameter(f"{pooling!r} is not one of {', '.join(POOLINGS)}", param_hint="--pooling")
    if compare is not None and importlib.util.find_spec("sentence_transformers") is None:
        raise MistralError("--compare sentence-transformers needs it: pip install sentence-transformers")
    console = stderr_console()
    with console.status(f"embedding {count} sentences…") if console.is_terminal else nullcontext():
        try:
            result = embeddings.run(model, count, threads, repetitions, compare, pooling)
        except ValueError as exc:
            raise MistralError(str(exc)) from None
    if as_json:
        print(json.dumps(result))
    else:
        embeddings.render(result, console)


def _url(spec: str) -> tuple[str, str]:
    name, sep, address = spec.partition("=")
    if not sep:
        name, address = "", spec
    if not address.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{spec!r}: an http:// or https:// address, optionally NAME=URL", param_hint="--url")
    address = address.rstrip("/").removesuffix("/v1")
    return name or address.split("://", 1)[1], address


def _bench_http(
    model, serve, targets, levels, prompt_len, gen_tokens, repetitions, threads, api_key, as_json, kv_cache_dtype="f32"
):
    import asyncio
    import time

    from mistralcli.bench import http as bench_http
    from mistralcli.bench.figures import peak_rss_mib
    from mistralcli.errors import MistralError

    console = stderr_console()
    say = console.print if not as_json or console.is_terminal else (lambda *_: None)
    try:
        from mistralcli.loading.loader import load_tokenizer

        tokenizer, _ = load_tokenizer(model)
        encode, decode = tokenizer.encode, tokenizer.decode
    except MistralError:  # no local tokenizer for these servers: prompts at about four characters a token
        encode = decode = None

    def prompts(n, tag):
        return bench_http.prompt_texts(prompt_len, n, tag, encode, decode)

    def run(base, name, api):
        with console.status(f"benchmarking {name}…") if console.is_terminal else nullcontext():
            try:
                return asyncio.run(bench_http.bench_url(base, levels, prompts, gen_tokens, repetitions, api, say, name))
            except OSError as exc:
                raise MistralError(f"{name}: cannot reach {base}: {exc.strerror or exc}") from None

    engines = {}
    if serve:
        start = time.perf_counter()
        extra = ("--kv-cache-dtype", kv_cache_dtype)
        with bench_http.served(model, threads, max(levels), extra) as (base, proc):
            load_s = time.perf_counter() - start
            engines["mistralcli"] = {
                "engine": "mistralcli",
                "load_s": load_s,
                **run(base, "mistralcli", None),
                "peak_rss_mib": peak_rss_mib(proc.pid),
            }
    for name, base in targets:
        engines[name] = {"engine": name, **run(base, name, api_key)}
    result = {
        "mode": "http",
        "machine": {"threads": threads, "cpu_count": os.cpu_count()},
        "settings": {
            "concurrency": levels,
            "prompt_tokens": prompt_len,
            "gen_tokens": gen_tokens,
            "repetitions": repetitions,
            "kv_cache_dtype": kv_cache_dtype,
        },
        "engines": engines,
    }
    first, *others = list(engines)
    if others:
        result["ratios"] = {
            other: _http_ratios(engines[first]["concurrency"], engines[other]["concurrency"]) for other in others
        }
        result["ratios_relative_to"] = first
    if as_json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"streaming /v1/completions · prompt ~{prompt_len} tokens, {gen_tokens} generated per request")
    for column in ("server", "requests", *CONCURRENCY_COLUMNS, "errors"):
        table.add_column(column, justify="right")
    for name, figures in engines.items():
        for n, f in figures["concurrency"].items():
            table.add_row(name, n, *_concurrency_cells(f), str(f["errors"]))
    out = Console(no_color="NO_COLOR" in os.environ)
    out.print(table)
    for other, by_level in result.get("ratios", {}).items():
        out.print(
            f"{first} vs {other}: "
            + ", ".join(
                f"{n} requests {r['aggregate']:.2f}x tok/s, {r['ttft_p50']:.2f}x TTFT"
                for n, r in by_level.items()
                if r["aggregate"] is not None
            )
            + " (> 1: "
            + first
            + " is better)"
        )


def _http_ratios(ours: dict, theirs: dict) -> dict:
    out = {}
    for n, mine in ours.items():
        peer = theirs.get(n)
        ok = peer and mine["aggregate_tok_s"]["median"] and peer["aggregate_tok_s"]["median"]
        out[n] = {
            "aggregate": mine["aggregate_tok_s"]["median"] / peer["aggregate_tok_s"]["median"] if ok else None,
            "ttft_p50": peer["ttft_s"]["p50"] / mine["ttft_s"]["p50"]
            if ok and mine["ttft_s"]["p50"] and peer["ttft_s"]["p50"]
            else None,
        }
    return out


def _run_llama_cpp(path, threads, gen_tokens, repetitions, lengths):
    from mistralcli.bench.figures import EngineFigures
    from mistralcli.errors import MistralError

    cmd = [
        sys.executable,
        "-m",
        "mistralcli.bench.llama_cpp",
        path,
        str(threads),
        str(gen_tokens),
        str(repetitions),
        ",".join(map(str, lengths)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise MistralError(f"llama.cpp benchmark failed: {last}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return EngineFigures(
        data["engine"],
        data["load_s"],
        {int(k): v for k, v in data["prefill_tok_s"].items()},
        data["decode_tok_s"],
        data["ttft_s"],
        data["peak_rss_mib"],
    )


CONCURRENCY_COLUMNS = ("aggregate tok/s", "per stream tok/s", "TTFT p50 / p95, s", "inter-token p50 / p95, ms")


def _concurrency_cells(f: dict) -> tuple[str, str, str, str]:
    """One concurrency level's figures (bench.bench_concurrency's or bench_http's) as table cells."""
    ttft = f"{f['ttft_s']['p50']:.3f} / {f['ttft_s']['p95']:.3f}" if f["ttft_s"]["count"] else "-"
    itl = f"{1000 * f['itl_s']['p50']:.1f} / {1000 * f['itl_s']['p95']:.1f}" if f["itl_s"]["count"] else "-"
    return _cell(f["aggregate_tok_s"]), _cell(f["per_stream_tok_s"]), ttft, itl


def _cell(s: dict, digits: int = 1) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}..{s['max']:.{digits}f}]"


def _print_table(result, ours, peer):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} · {result['machine']['threads']} threads · {result['machine']['simd']}")
    table.add_column("figure")
    table.add_column("mistralcli", justify="right")
    if peer:
        table.add_column("llama.cpp", justify="right")
        table.add_column("ratio", justify="right")
    ratios = result.get("ratios_vs_llama_cpp", {})
    rows = [
        ("load, s", f"{ours.load_s:.2f}", peer and f"{peer.load_s:.2f}", "load"),
        ("time to first token, s", _cell(ours.ttft_s, 3), peer and _cell(peer.ttft_s, 3), "ttft"),
    ]
    rows += [
        (f"prefill {n} tok/s", _cell(ours.prefill_tok_s[n]), peer and _cell(peer.prefill_tok_s[n]), f"prefill_{n}")
        for n in ours.prefill_tok_s
    ]
    rows += [
        ("decode tok/s", _cell(ours.decode_tok_s), peer and _cell(peer.decode_tok_s), "decode"),
        ("peak RSS, MiB", f"{ours.peak_rss_mib:.0f}", peer and f"{peer.peak_rss_mib:.0f}", "peak_rss"),
    ]
    for label, mine, theirs, key in rows:
        table.add_row(label, mine, *([theirs, f"{ratios[key]:.2f}x"] if peer else []))
    console = Console(no_color="NO_COLOR" in os.environ)
    console.print(table)
    console.print(
        f"memory bandwidth {result['machine']['memory_bandwidth_gb_s']:.1f} GB/s · "
        f"{result['decode_bytes_per_token'] / 1e6:.1f} MB read per token · decode roofline "
        f"{result['decode_roofline_tok_s']:.0f} tok/s · reached {100 * result['decode_roofline_fraction']:.0f}%"
    )
    if peer:
        console.print("ratio > 1: mistralcli is better (faster, or less time or memory)")
