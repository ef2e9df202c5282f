"""/metrics in Prometheus' text format (prometheus_client): the server's requests by route and status,
and the engine's state and histograms, read from the engine when scraped."""

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _EngineCollector:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        stats = self.engine.stats()
        counters = self.engine.counters
        gauges = {
            "running": ("mistralcli_requests_running", "Requests being computed"),
            "waiting": ("mistralcli_requests_waiting", "Requests queued for the engine"),
            "kv_blocks_used": ("mistralcli_kv_blocks_used", "KV-cache blocks in use"),
            "kv_blocks_free": ("mistralcli_kv_blocks_free", "KV-cache blocks free"),
            "kv_blocks_total": ("mistralcli_kv_blocks_total", "KV-cache blocks in the pool"),
            "prefix_cache_hit_rate": ("mistralcli_prefix_cache_hit_rate", "Share of prompt blocks found cached"),
        }
        for key, (name, doc) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=float(stats[key]))
        totals = {
            "added_requests": ("mistralcli_engine_requests_added", "Requests queued for the engine"),
            "constrained_requests": (
                "mistralcli_engine_requests_constrained",
                "Requests queued with structured output (a grammar, schema or forced tool call)",
            ),
            "prompt_tokens": ("mistralcli_prompt_tokens", "Prompt tokens of finished requests"),
            "generated_tokens": ("mistralcli_generation_tokens", "Tokens generated"),
            "finished_requests": ("mistralcli_engine_requests_finished", "Requests the engine finished"),
            "preemptions": ("mistralcli_preemptions", "Sequences preempted when the KV cache ran out"),
            "prefix_cache_hits": ("mistralcli_prefix_cache_hits", "Prompt blocks found in the prefix cache"),
            "prefix_cache_queries": ("mistralcli_prefix_cache_queries", "Prompt blocks looked up in the prefix cache"),
        }
        for key, (name, doc) in totals.items():
            yield CounterMetricFamily(name, doc, value=float(stats[key]))
        for name, doc, hist in (
            ("mistralcli_time_to_first_token_seconds", "From arrival to the first token", counters.ttft_s),
            ("mistralcli_inter_token_latency_seconds", "Between a request's tokens", counters.itl_s),
        ):
            buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), n) for bound, n in hist.cumulative()]
            yield HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.total)


class ServerMetrics:
    """One registry per server (tests start several in one process)."""

    def __init__(self, engine):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mistralcli_http_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mistralcli_http_request_duration_seconds",
            "HTTP request time by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tool_call_parse_errors = Counter(
            "mistralcli_tool_call_parse_errors",
            "Tool calls the model opened that could not be parsed, by call format",
            ["parser"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "mistralcli_tool_calls",
            "Tool calls the server ran, by tool and outcome (ok, error, unknown_tool, invalid_arguments, denied)",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self.tool_call_latency = Histogram(
            "mistralcli_tool_call_duration_seconds",
            "Time of a tool call the server ran, approval waits included, by tool",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tool_rounds = Counter(
            "mistralcli_tool_rounds",
            "Rounds of tool calls the server ran for its chat completions",
            registry=self.registry,
        )
        self.embedded_inputs = Counter(
            "mistralcli_embedding_inputs", "Inputs embedded (/v1/embeddings, /api/embed)", registry=self.registry
        )
        self.embedded_tokens = Counter("mistralcli_embedding_tokens", "Tokens embedded", registry=self.registry)
        if engine is not None:  # an embedding model's server has no engine
            self.registry.register(_EngineCollector(engine))

    def observe_tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        self.tool_calls.labels(tool, outcome).inc()
        self.tool_call_latency.labels(tool).observe(seconds)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
