"""The server benchmark (`mistral bench --url/--serve`): N streaming completions at once against any
OpenAI-compatible server, with the figures of the offline concurrency mode (`bench.concurrency`),
so one report compares both; and the streaming client the load test (`mistralcli.bench.loadtest`) uses.

Every request is a streaming `/v1/completions` with temperature 0, `ignore_eos` and a distinct opening
(no prefix-cache hits between requests). Tokens are counted from the final `usage` chunk where the
server sends one, else one per chunk with text.
"""

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httputil import HTTPInputError

from mistralcli.bench.figures import FILLER, concurrency_level, summary


class Disconnect(HTTPInputError):
    """Raised in the streaming callback to hang up mid-stream (the load test's leaving clients). An
    HTTPInputError, which tornado passes up to the fetch without logging it as a crash."""


@dataclass
class Stream:
    """One streaming request as the client saw it (perf_counter times)."""

    start: float
    first: float | None = None
    last: float | None = None
    gaps: list[float] = field(default_factory=list)  # between chunks that carried text
    chunks: int = 0
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    status: int | None = None
    error: str | None = None
    disconnected: bool = False
    done: bool = False  # saw `data: [DONE]`

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.chunks


def http_client(max_clients: int) -> AsyncHTTPClient:
    return AsyncHTTPClient(force_instance=True, max_clients=max_clients, max_body_size=1 << 30)


def headers(api_key: str | None) -> dict:
    out = {"Content-Type": "application/json"}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


async def stream_completion(
    client: AsyncHTTPClient,
    url: str,
    body: dict,
    api_key: str | None = None,
    disconnect_after: int | None = None,
    timeout: float = 600.0,
) -> Stream:
    """POST a streaming completion to url (…/v1/completions or …/v1/chat/completions) and record it.
    disconnect_after: hang up after that many text chunks."""
    record = Stream(start=time.perf_counter())
    pending = bytearray()

    def on_event(data: bytes):
        if data == b"[DONE]":
            record.done = True
            return
        chunk = json.loads(data)
        if chunk.get("usage"):
            record.completion_tokens = chunk["usage"].get("completion_tokens")
            record.prompt_tokens = chunk["usage"].get("prompt_tokens")
        for choice in chunk.get("choices") or []:
            text = choice.get("text") or (choice.get("delta") or {}).get("content")
            if text:
                now = time.perf_counter()
                if record.first is None:
                    record.first = now
                else:
                    record.gaps.append(now - record.last)
                record.last = now
                record.chunks += 1
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
        if disconnect_after is not None and record.chunks >= disconnect_after:
            record.disconnected = True
            raise Disconnect

    def on_bytes(data: bytes):
        pending.extend(data.replace(b"\r\n", b"\n"))
        while (end := pending.find(b"\n\n")) >= 0:
            event = bytes(pending[:end])
            del pending[: end + 2]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    on_event(line[5:].strip())

    request = HTTPRequest(
        url,
        method="POST",
        body=json.dumps(body),
        headers=headers(api_key),
        streaming_callback=on_bytes,
        request_timeout=timeout,
        connect_timeout=30,
    )
    try:
        response = await client.fetch(request, raise_error=False)
        record.status = response.code
        if response.code != 200:
            record.error = f"HTTP {response.code}"
        elif not record.done:
            record.error = "the stream ended without [DONE]"
    except Disconnect:
        pass
    except (HTTPClientError, OSError, ValueError) as exc:
        if not record.disconnected:  # hanging up surfaces as a closed stream
            record.error = f"{type(exc).__name__}: {exc}"
    return record


async def get_json(client: AsyncHTTPClient, url: str, api_key: str | None = None, timeout: float = 30.0) -> dict:
    response = await client.fetch(HTTPRequest(url, headers=headers(api_key), request_timeout=timeout))
    return json.loads(response.body)


def prompt_texts(prompt_tokens: int, count: int, tag: str, encode=None, decode=None) -> list[str]:
    """`count` prompts of about `prompt_tokens` tokens, each opening differently. With a tokenizer the
    filler is cut so that the whole prompt is that long in tokens; without, at about four characters a token."""
    openings = [f"Request {tag}-{i}: " for i in range(count)]
    if encode is None:
        filler = (FILLER * (4 * prompt_tokens // len(FILLER) + 1))[: 4 * prompt_tokens]
        return [opening + filler for opening in openings]
    ids = encode(FILLER)
    ids = ids * (prompt_tokens // len(ids) + 1)
    return [opening + decode(ids[: max(1, prompt_tokens - len(encode(opening)))]) for opening in openings]


async def bench_url(
    base: str,
    levels: list[int],
    prompts,
    gen_tokens: int,
    repetitions: int,
    api_key: str | None = None,
    progress=None,
    name: str | None = None,
) -> dict:
    """For each N in levels, N streaming completions at once (one warm-up round, then `repetitions`):
    the fields of bench.bench_concurrency. prompts(n, tag) gives the n prompt texts of one round; the tags
    carry a nonce of this run, so that a server measured again does not answer from its prefix cache the
    prompts an earlier run sent it (vLLM's is on by default: it read a 0.37 s TTFT at 16 streams, not 3.4 s)."""
    run = secrets.token_hex(3)
    client = http_client(max(levels))
    try:
        models = await get_json(client, f"{base}/v1/models", api_key)
        model = models["data"][0]["id"] if models.get("data") else None
        results = {}
        for n in levels:
            aggregate, per_stream, ttft, itl, prompt_lengths, errors = [], [], [], [], [], 0
            for rep in range(repetitions + 1):  # the first is a warm-up
                bodies = [
                    {
                        "model": model,
                        "prompt": text,
                        "max_tokens": gen_tokens,
                        "temperature": 0.0,
                        "ignore_eos": True,
                        "stream": True,
                        "stream_options": {"include_usage": True},
                    }
                    for text in prompts(n, f"{run}.{n}.{rep}")
                ]
                start = time.perf_counter()
                records = await asyncio.gather(
                    *(stream_completion(client, f"{base}/v1/completions", body, api_key) for body in bodies)
                )
                if rep == 0:
                    continue
                errors += sum(1 for r in records if r.error)
                good = [r for r in records if not r.error and r.first is not None]
                if good:
                    aggregate.append(sum(r.tokens for r in good) / (max(r.last for r in good) - start))
                per_stream += [(r.tokens - 1) / (r.last - r.first) for r in good if r.tokens > 1 and r.last > r.first]
                ttft += [r.first - r.start for r in good]
                itl += [gap for r in good for gap in r.gaps]
                prompt_lengths += [r.prompt_tokens for r in good if r.prompt_tokens]
            results[str(n)] = concurrency_level(aggregate, per_stream, ttft, itl, errors, None)
            results[str(n)]["prompt_tokens_seen"] = summary([float(p) for p in prompt_lengths])["median"]
            if progress:
                median = results[str(n)]["aggregate_tok_s"]["median"]
                progress(
                    f"{name or base} concurrency {n}: "
                    + (f"{median:.1f} tok/s aggregate" if median is not None else "no request succeeded")
                    + (f", {errors} errors" if errors else "")
                )
        return {
            "url": base,
            "model": model,
            "owned_by": (models.get("data") or [{}])[0].get("owned_by"),
            "concurrency": results,
        }
    finally:
        client.close()


@contextmanager
def served(model: str | None, threads: int | None, max_num_seqs: int, extra: tuple[str, ...] = ()):
    """`mistral serve` on a free port in a child process; yields (base URL, process)."""
    cmd = [
        sys.executable,
        "-m",
        "mistralcli",
        "serve",
        "--port",
        "0",
        "--quiet",
        "--max-num-seqs",
        str(max_num_seqs),
        *(["--model", model] if model else []),
        *(["--threads", str(threads)] if threads else []),
        *extra,
    ]
    log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "NO_COLOR": "1"})
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            proc.wait(timeout=30)
            from mistralcli.errors import MistralError

            log.seek(0)
            detail = (log.read().strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise MistralError(f"mistral serve did not start: {detail}")
        yield url, proc
    finally:
        log.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
