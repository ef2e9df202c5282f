"""Load test for `mistral serve` (`mistral bench --load-test`): many clients at once for a while, some
hanging up mid-stream, with a prober timing /health all along. A benchmark mode, not a unit test:

    mistral bench --load-test --clients 64 --disconnect 0.2 --duration 180
    mistral bench --load-test --url http://127.0.0.1:8000 --json

Each client loops: a chat or text completion (streaming 4 times in 5), a random prompt and length;
a fifth of the streams (--disconnect) hang up after a few chunks. At the end it waits for the server to
go idle and reads /metrics. It passes (exit 0) when no request got a 5xx, none was lost (every one
either finished with [DONE] and a finish_reason, or was the client's own hang-up), none hung past
--timeout, every KV block is free again, and /health's p99 stayed under --health-p99-ms.
"""

import asyncio
import json
import random
import sys
import time

from tornado.httpclient import HTTPRequest

from mistralcli.bench.figures import FILLER, percentiles
from mistralcli.bench.http import get_json, headers, http_client, served, stream_completion

TOPICS = ("the sea", "a lighthouse", "printing presses", "bread", "the moon", "trains", "a small village", "rain")


def _body(rng: random.Random, model: str, stream: bool) -> tuple[str, dict]:
    topic = rng.choice(TOPICS)
    words = FILLER.split()
    context = " ".join(words[: rng.randint(0, len(words))])
    body = {
        "model": model,
        "max_tokens": rng.randint(8, 96),
        "temperature": rng.choice([0.0, 0.7, 1.0]),
        "seed": rng.randint(0, 1 << 30),
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if rng.random() < 0.5:
        body["messages"] = [{"role": "user", "content": f"{context} Tell me about {topic}."}]
        return "/v1/chat/completions", body
    body["prompt"] = f"{context} A story about {topic}:"
    return "/v1/completions", body


async def _client(base, model, api_key, deadline, rng, disconnect, timeout, tally, client):
    while time.monotonic() < deadline:
        stream = rng.random() < 0.8
        route, body = _body(rng, model, stream)
        leave = rng.randint(1, 6) if stream and rng.random() < disconnect else None
        started = time.monotonic()
        if stream:
            record = await stream_completion(
                client, base + route, body, api_key, disconnect_after=leave, timeout=timeout
            )
            status, error = record.status, record.error
            if record.disconnected:
                tally["disconnected"] += 1
                continue
            if not error and record.finish_reason is None:
                error = "no finish_reason"
            tally["tokens"] += record.tokens
        else:
            response = await client.fetch(
                HTTPRequest(
                    base + route,
                    method="POST",
                    body=json.dumps(body),
                    headers=headers(api_key),
                    request_timeout=timeout,
                ),
                raise_error=False,
            )
            status, error = response.code, None
            if response.code == 200:
                answer = json.loads(response.body)
                if not answer["choices"][0].get("finish_reason"):
                    error = "no finish_reason"
                tally["tokens"] += answer["usage"]["completion_tokens"]
            else:
                error = f"HTTP {response.code}"
        if time.monotonic() - started >= timeout:
            tally["hung"] += 1
        if status is not None and status >= 500:
            tally["5xx"] += 1
        if error:
            tally["errors"].append(f"{route}: {error}")
        else:
            tally["completed"] += 1


async def _prober(base, stop: asyncio.Event, interval: float, latencies: list, failures: list):
    client = http_client(1)
    try:
        while not stop.is_set():
            start = time.perf_counter()
            response = await client.fetch(HTTPRequest(base + "/health", request_timeout=30), raise_error=False)
            latencies.append(time.perf_counter() - start)
            if response.code != 200:
                failures.append(response.code)
            await asyncio.sleep(interval)
    finally:
        client.close()


def _metric(text: str, name: str) -> float | None:
    """The sum of a gauge's samples over its labels (every model's), or None when /metrics has none."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
    return sum(values) if values else None


async def run(
    base: str, clients: int, disconnect: float, duration: float, timeout: float, api_key: str | None, seed: int, say
) -> dict:
    client = http_client(clients)
    try:
        model = (await get_json(client, base + "/v1/models", api_key))["data"][0]["id"]
        tally = {"completed": 0, "disconnected": 0, "hung": 0, "5xx": 0, "tokens": 0, "errors": []}
        latencies, failures, stop = [], [], asyncio.Event()
        prober = asyncio.create_task(_prober(base, stop, 0.05, latencies, failures))
        deadline = time.monotonic() + duration
        start = time.perf_counter()
        workers = [
            _client(base, model, api_key, deadline, random.Random(seed * 1000 + i), disconnect, timeout, tally, client)
            for i in range(clients)
        ]
        progress = asyncio.create_task(_progress(tally, start, duration, say))
        await asyncio.gather(*workers)
        wall = time.perf_counter() - start
        progress.cancel()
        stop.set()
        await prober
        idle_deadline = time.monotonic() + 30
        while True:  # the server frees a hung-up request's blocks at its next step
            ready = await get_json(client, base + "/ready")
            metrics = (await client.fetch(base + "/metrics")).body.decode()
            used = _metric(metrics, "mistralcli_kv_blocks_used")
            if (ready["running"] == ready["waiting"] == 0 and not used) or time.monotonic() > idle_deadline:
                break
            await asyncio.sleep(0.1)
        health = percentiles(latencies)
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else None
        return {
            "url": base,
            "clients": clients,
            "disconnect_fraction": disconnect,
            "duration_s": wall,
            "requests": tally["completed"] + tally["disconnected"] + len(tally["errors"]),
            "completed": tally["completed"],
            "disconnected": tally["disconnected"],
            "hung": tally["hung"],
            "http_5xx": tally["5xx"],
            "errors": len(tally["errors"]),
            "error_samples": tally["errors"][:10],
            "tokens": tally["tokens"],
            "aggregate_tok_s": tally["tokens"] / wall,
            "running_after": ready["running"],
            "waiting_after": ready["waiting"],
            "kv_blocks_used_after": used,
            "health_ms": {
                "p50": 1000 * health["p50"],
                "p99": 1000 * p99,
                "max": 1000 * ordered[-1],
                "count": len(ordered),
                "failures": len(failures),
            }
            if ordered
            else None,
        }
    finally:
        client.close()


async def _progress(tally, start, duration, say):
    while True:
        await asyncio.sleep(10)
        say(
            f"{time.perf_counter() - start:5.0f}/{duration:.0f} s: {tally['completed']} completed, "
            f"{tally['disconnected']} hung up, {len(tally['errors'])} errors, {tally['tokens']} tokens"
        )


def load_test(
    url: str | None,
    model: str | None,
    threads: int | None,
    max_num_seqs: int,
    clients: int,
    disconnect: float,
    duration: float,
    timeout: float,
    health_p99_ms: float,
    api_key: str | None,
    seed: int,
    as_json: bool,
) -> int:
    """Run the load test against `url` (or a `mistral serve` it starts on `model`), print the report
    (one JSON object with as_json) and return the exit code: 0 passed, 1 failed."""

    def say(line):
        print(line, file=sys.stderr, flush=True)

    def go(base):
        say(f"{clients} clients against {base} for {duration:.0f} s")
        return asyncio.run(run(base, clients, disconnect, duration, timeout, api_key, seed, say))

    if url:
        report = go(url.rstrip("/").removesuffix("/v1"))
    else:
        with served(model, threads, max_num_seqs) as (base, _):
            report = go(base)
    failures = []
    if report["http_5xx"]:
        failures.append(f"{report['http_5xx']} responses were 5xx")
    if report["errors"]:
        failures.append(f"{report['errors']} requests failed: {report['error_samples']}")
    if report["hung"]:
        failures.append(f"{report['hung']} requests took longer than {timeout:.0f} s")
    if report["running_after"] or report["waiting_after"] or report["kv_blocks_used_after"]:
        failures.append(
            f"not idle afterwards: {report['running_after']} running, {report['waiting_after']} waiting, "
            f"{report['kv_blocks_used_after']} KV blocks in use"
        )
    health = report["health_ms"]
    if health is None or health["failures"] or health["p99"] >= health_p99_ms:
        failures.append(f"/health: {health}")
    report["passed"], report["failures"] = not failures, failures
    if as_json:
        print(json.dumps(report))
    else:
        print(
            f"{report['requests']} requests in {report['duration_s']:.0f} s: {report['completed']} completed, "
            f"{report['disconnected']} hung up by the client, {report['errors']} errors, {report['http_5xx']} 5xx, "
            f"{report['hung']} hung; {report['aggregate_tok_s']:.1f} tok/s; /health p50 {health['p50']:.1f} ms, "
            f"p99 {health['p99']:.1f} ms, max {health['max']:.1f} ms; KV blocks in use after: "
            f"{report['kv_blocks_used_after']:.0f}"
        )
        print("PASSED" if not failures else "FAILED: " + "; ".join(failures))
    return 0 if not failures else 1
