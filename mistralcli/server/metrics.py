"""/metrics in Prometheus' text format (prometheus_client): the server's requests by route and status,
and each loaded model's engine state and histograms (a `model` label), read from the engines when scraped."""

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _EngineCollector:
    def __init__(self, models):
        self.models = models  # a server.model_manager.ModelManager

    def collect(self):
        engines = [(slot.name, slot.state.engine) for slot in self.models.loaded() if slot.state.engine is not None]
        gauges = {
            "running": ("mistralcli_requests_running", "Requests being computed"),
            "waiting": ("mistralcli_requests_waiting", "Requests queued for the engine"),
            "kv_blocks_used": ("mistralcli_kv_blocks_used", "KV-cache blocks in use"),
            "kv_blocks_free": ("mistralcli_kv_blocks_free", "KV-cache blocks free"),
            "kv_blocks_total": ("mistralcli_kv_blocks_total", "KV-cache blocks in the pool"),
            "prefix_cache_hit_rate": ("mistralcli_prefix_cache_hit_rate", "Share of prompt blocks found cached"),
        }
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
        slots = list(self.models.slots.values())
        for name, doc, value, family in (
            (
                "mistralcli_model_loaded",
                "Whether the model is loaded (1), loading (0.5) or not (0)",
                None,
                GaugeMetricFamily,
            ),
            (
                "mistralcli_model_memory_bytes",
                "Bytes the model holds loaded: weights and KV pool",
                "memory",
                GaugeMetricFamily,
            ),
            ("mistralcli_model_loads", "Times the model was loaded", "loads", CounterMetricFamily),
        ):
            metric = family(name, doc, labels=["model"])
            for slot in slots:
                number = (
                    {"loaded": 1.0, "loading": 0.5}.get(slot.status, 0.0) if value is None else getattr(slot, value)
                )
                metric.add_metric([slot.name], float(number))
            yield metric
        stats = {name: engine.stats() for name, engine in engines}
        for family, table in ((GaugeMetricFamily, gauges), (CounterMetricFamily, totals)):
            for key, (name, doc) in table.items():
                metric = family(name, doc, labels=["model"])
                for model, values in stats.items():
                    metric.add_metric([model], float(values[key]))
                yield metric
        for name, doc, attr in (
            ("mistralcli_time_to_first_token_seconds", "From arrival to the first token", "ttft_s"),
            ("mistralcli_inter_token_latency_seconds", "Between a request's tokens", "itl_s"),
        ):
            metric = HistogramMetricFamily(name, doc, labels=["model"])
            for model, engine in engines:
                hist = getattr(engine.counters, attr)
                buckets = [("+Inf" if b == float("inf") else repr(float(b)), n) for b, n in hist.cumulative()]
                metric.add_metric([model], buckets, sum_value=hist.total)
            yield metric


class ServerMetrics:
    """One registry per server (tests start several in one process)."""

    def __init__(self, models):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mistralcli_http_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.model_requests = Counter(
            "mistralcli_model_requests",
            "HTTP requests by the model they named, and status",
            ["model", "status"],
            registry=self.registry,
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
        self.registry.register(_EngineCollector(models))

    def observe_tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        self.tool_calls.labels(tool, outcome).inc()
        self.tool_call_latency.labels(tool).observe(seconds)

    def observe(self, route: str, status: int, seconds: float, model: str | None = None) -> None:
        self.requests.labels(route, str(status)).inc()
        if model is not None:
            self.model_requests.labels(model, str(status)).inc()
        self.latency.labels(route).observe(seconds)
