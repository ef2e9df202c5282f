"""`mistral ps`: the models a running `mistral serve` has loaded (its GET /v1/ps)."""

import json
import os

import typer

from mistralcli.commands._common import stderr_console, write_stdout

DEFAULT_URL = "http://127.0.0.1:8000"


def ps(
    url: str = typer.Option(
        None, "--url", help=f"The server. Default: $MISTRALCLI_URL, else {DEFAULT_URL}.", show_default=False
    ),
    api_key: str = typer.Option(None, "--api-key", help="Its API key (default: $MISTRALCLI_API_KEY)."),
    as_json: bool = typer.Option(False, "--json", help="Print the server's answer as one JSON object."),
):
    """Show the models a server has loaded: memory, KV pool, requests running, idle time, when each unloads.

    Example: mistral ps --url http://127.0.0.1:8000
    """
    import httpx

    base = (url or os.environ.get("MISTRALCLI_URL") or DEFAULT_URL).rstrip("/").removesuffix("/v1")
    if not base.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{base!r} is not an http:// or https:// URL", param_hint="--url")
    key = api_key or os.environ.get("MISTRALCLI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    console = stderr_console()
    try:
        response = httpx.get(base + "/v1/ps", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        console.print(f"error: no server answers at {base} ({exc}); start one with: mistral serve", markup=False)
        raise typer.Exit(1) from None
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text.strip()[:200]
        console.print(f"error: {base}/v1/ps answered {response.status_code}: {message}", markup=False)
        raise typer.Exit(1)
    body = response.json()
    if as_json:
        write_stdout(json.dumps(body, indent=2) + "\n")
        return
    write_stdout(_table(body))


def _table(body: dict) -> str:
    from mistralcli.loading.discovery import human_size

    rows = [("NAME", "STATUS", "MEMORY", "KV BLOCKS", "REQUESTS", "IDLE", "UNLOADS IN")]
    for model in body.get("data", []):
        kv = f"{model['kv_blocks_used']}/{model['kv_blocks_total']}" if "kv_blocks_total" in model else "-"
        idle = f"{model['idle_s']:.0f} s" if model.get("idle_s") is not None else "-"
        left = model.get("expires_in_s")
        unloads = "never" if left is None else f"{left:.0f} s"
        if model["status"] != "loaded":
            unloads = "-"
        memory = human_size(model["memory_bytes"]) if model["memory_bytes"] else "-"
        rows.append((model["id"], model["status"], memory, kv, str(model["requests_running"]), idle, unloads))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    budget = body.get("memory_budget_bytes")
    used = human_size(body.get("memory_bytes", 0))
    lines.append(f"{len(rows) - 1} loaded, {used}" + (f" of {human_size(budget)}" if budget else ""))
    return "\n".join(lines) + "\n"
