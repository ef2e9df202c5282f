"""`mistral run --batch IN.jsonl`: OpenAI's batch input (one request a line: custom_id, method, url, body) or plain
prompts one a line, all through the batched engine at once, the results in OpenAI's batch output format in input
order. The requests go to the server's own handlers (an in-process server on a loopback port with a one-time API
key), so each body is validated and answered exactly as `mistral serve` answers it. With an output file a rerun
skips the custom_ids already answered there, and results are appended as they come (an interrupted run loses
none); at the end the file is rewritten in input order. A malformed line is an error line with its number; the
rest go on."""

import asyncio
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


@dataclass
class BatchLine:
    number: int  # 1-based, in the input
    custom_id: str
    url: str | None = None
    body: dict | None = None
    error: dict | None = None  # the line itself is wrong: {"code", "message"}


@dataclass
class BatchReport:
    total: int = 0
    skipped: int = 0  # already in the output file
    answered: int = 0
    failed: int = 0  # answered with an error status, or malformed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def read_lines(text: str, each_line: bool, defaults: dict, raw: bool = False) -> list[BatchLine]:
    """The batch's requests: OpenAI's batch lines, or (each_line) one prompt a line made into a request with the
    defaults (sampling, max_tokens, system). Blank lines are skipped; a malformed line becomes an error."""
    out: list[BatchLine] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if each_line:
            out.append(BatchLine(number, f"line-{number}", *_prompt_request(line, defaults, raw)))
            continue
        entry = _parse_line(number, line)
        if entry.error is None and entry.custom_id in seen:
            entry.error = {"code": "duplicate_custom_id", "message": f"line {number}: custom_id {entry.custom_id!r} "
                           "was given by an earlier line"}  # fmt: skip
        seen.add(entry.custom_id)
        out.append(entry)
    return out


def _prompt_request(prompt: str, defaults: dict, raw: bool) -> tuple[str, dict]:
    extra = {k: v for k, v in defaults.items() if k != "system"}
    if raw:
        return "/v1/completions", {"prompt": prompt, **extra}
    messages = [{"role": "system", "content": defaults["system"]}] if defaults.get("system") else []
    return "/v1/chat/completions", {"messages": [*messages, {"role": "user", "content": prompt}], **extra}


def _parse_line(number: int, line: str) -> BatchLine:
    fallback = f"line-{number}"
    try:
        entry = json.loads(line)
    except ValueError as exc:
        return BatchLine(number, fallback, error={"code": "invalid_json", "message": f"line {number}: {exc}"})
    if not isinstance(entry, dict):
        return BatchLine(number, fallback, error={"code": "invalid_line", "message": f"line {number}: not an object"})
    custom_id = entry.get("custom_id")
    problem = None
    if not isinstance(custom_id, str) or not custom_id:
        problem, custom_id = "custom_id must be a non-empty string", fallback
    elif entry.get("method", "POST") != "POST":
        problem = f"method must be POST, not {entry.get('method')!r}"
    elif entry.get("url") not in URLS:
        problem = f"url must be one of {', '.join(URLS)}, not {entry.get('url')!r}"
    elif not isinstance(entry.get("body"), dict):
        problem = "body must be an object"
    if problem is not None:
        return BatchLine(number, custom_id, error={"code": "invalid_line", "message": f"line {number}: {problem}"})
    body = dict(entry["body"])
    body.pop("model", None)  # the batch runs on the model it was started with
    body.pop("stream", None)
    return BatchLine(number, custom_id, entry["url"], body)


def done_ids(path: Path | None) -> dict[str, str]:
    """custom_id -> its output line, of an output file from an earlier run (a resumed batch skips those; not the
    ones the server failed with a 5xx, which are asked again)."""
    if path is None or not path.is_file():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by an interrupted run: answered again
        if not isinstance(entry, dict) or not isinstance(entry.get("custom_id"), str):
            continue
        status = (entry.get("response") or {}).get("status_code")
        if status is not None and status >= 500:
            continue  # the server failed it (or shut down under it): asked again
        found[entry["custom_id"]] = line
    return found


def output_line(line: BatchLine, status: int | None, body: dict | None, request_id: str | None) -> str:
    """One line of OpenAI's batch output: the response (its status and body), or the line's own error."""
    entry = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line.custom_id}
    if line.error is not None:
        entry |= {"response": None, "error": line.error}
    else:
        entry |= {"response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}
    return json.dumps(entry, ensure_ascii=False)


async def run_batch(app, lines: list[BatchLine], api_key: str, concurrency: int, write, progress=None) -> BatchReport:
    """Answer the lines through the server app (serving on a loopback port for the duration); `write(line, text)`
    receives each output line as its answer arrives; progress(report) after each."""
    from tornado.httpclient import AsyncHTTPClient

    from mistralcli.server.serve import serve_app

    report = BatchReport(total=len(lines))
    ready = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    server = asyncio.ensure_future(
        serve_app(app, "127.0.0.1", 0, shutdown_timeout=5.0, on_ready=ready.set_result, stop=stop)
    )
    done, _ = await asyncio.wait([server, ready], return_when=asyncio.FIRST_COMPLETED)
    if server in done:
        server.result()  # it failed to start: raise its error
    base = ready.result()
    client = AsyncHTTPClient(force_instance=True, max_clients=concurrency)
    gate = asyncio.Semaphore(concurrency)
    began = time.perf_counter()

    async def answer(line: BatchLine) -> None:
        if line.error is not None:
            report.failed += 1
            report.errors.append(line.error["message"])
            write(line, output_line(line, None, None, None))
            return
        async with gate:
            response = await client.fetch(
                base + line.url,
                method="POST",
                body=json.dumps(line.body),
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
                request_timeout=3600,
                raise_error=False,
            )
        try:
            body = json.loads(response.body or b"null")
        except ValueError:
            body = {"error": {"message": (response.body or b"").decode(errors="replace")[:500]}}
        if response.code != 200:
            report.failed += 1
            message = (body or {}).get("error", {}).get("message", "") if isinstance(body, dict) else ""
            report.errors.append(f"line {line.number} ({line.custom_id}): {response.code} {message}")
        else:
            report.answered += 1
            usage = body.get("usage") or {}
            report.prompt_tokens += usage.get("prompt_tokens", 0)
            report.completion_tokens += usage.get("completion_tokens", 0) or 0
        write(line, output_line(line, response.code, body, response.headers.get("x-request-id")))
        report.seconds = time.perf_counter() - began
        if progress is not None:
            progress(report)

    try:
        await asyncio.gather(*(answer(line) for line in lines))
    finally:
        report.seconds = time.perf_counter() - began
        client.close()
        stop.set()
        await server
    return report


def new_api_key() -> str:
    return "batch-" + secrets.token_hex(16)
