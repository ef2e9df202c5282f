"""Sampling parameters and `sample`, the one function that picks a request's next token: (logits,
params, history, RNG state) in, the token and its logprobs out; the min_tokens mask, logit bias,
allowed and banned tokens and DRY before `mistralcli._ext.sampler.sample` (whose NumPy reference,
mistralcli/reference/sampling.py, must pick the same tokens).
"""

import math
import secrets
from dataclasses import dataclass, field, fields

import numpy as np

from mistralcli._ext import sampler as _sampler
from mistralcli.engine.thinking import ThinkingBudget
from mistralcli.structured.spec import StructuredOutputs

CUTOFF = 30.0  # candidates lie within this of the best scaled logit (as in the Cython kernel)
MASK64 = (1 << 64) - 1


@dataclass
class SamplingParams:
    """How to pick each next token. temperature 0 means greedy (argmax)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    typical_p: float = 1.0  # locally typical sampling (1 disables it)
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    allowed_token_ids: list[int] | None = None  # only these may be sampled
    banned_token_ids: list[int] = field(default_factory=list)  # these are never sampled
    # DRY ("don't repeat yourself"), as in koboldcpp and llama.cpp; multiplier 0 disables it
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_sequence_breakers: list[str] = field(default_factory=lambda: ["\n", ":", '"', "*"])
    dry_penalty_last_n: int = 0  # how far back DRY looks, 0: the whole context
    # what to generate (the engine's side; names as in vLLM's SamplingParams)
    max_tokens: int | None = None  # None: until a stop, or the context is full
    min_tokens: int = 0  # no stop token (the model's or stop_token_ids) before this many tokens
    ignore_eos: bool = False  # the model's end-of-generation tokens do not stop it
    stop_token_ids: list[int] = field(default_factory=list)  # more tokens that stop it (not in the output)
    stop: list[str] = field(default_factory=list)  # strings that stop it (not in the output)
    skip_special_tokens: bool = True  # control tokens give no text (False: they do, as tool-call markers must)
    logprobs: int | None = None  # per output token: its log-probability and the `logprobs` most likely ones
    n: int = 1  # choices per prompt: they share the prompt's KV blocks (seeds seed, seed + 1, ...)
    structured: StructuredOutputs | None = None  # what the output must match (a JSON schema, regex, grammar...)
    thinking_budget: ThinkingBudget | None = None  # the most tokens a thought takes (engine.thinking)

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop)
        self.stop_token_ids = list(self.stop_token_ids)
        self.logit_bias = {int(k): float(v) for k, v in dict(self.logit_bias).items()}
        if isinstance(self.structured, dict):
            self.structured = StructuredOutputs(**self.structured)
        if self.structured is not None and not isinstance(self.structured, StructuredOutputs):
            raise ValueError("structured must be a StructuredOutputs (or a dict of its fields)")
        # inf and nan pass (or dodge) the range checks below, so every float is checked first
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, not {value}")
        if not all(math.isfinite(v) for v in self.logit_bias.values()):
            raise ValueError("logit_bias values must be finite numbers")
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.penalty_last_n >= 0, "penalty_last_n must be >= 0"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens must be >= 1"),
            (self.min_tokens >= 0, "min_tokens must be >= 0"),
            (self.max_tokens is None or self.min_tokens <= self.max_tokens, "min_tokens must be <= max_tokens"),
            (all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids), "stop_token_ids must be token ids"),
            (all(isinstance(t, str) and t for t in self.stop), "stop strings must be non-empty strings"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in [0, 20]"),
            (0 < self.typical_p <= 1, "typical_p must be in (0, 1]"),
            (1 <= self.n <= 128, "n must be in [1, 128]"),
            (all(-100 <= v <= 100 for v in self.logit_bias.values()), "logit_bias values must be in [-100, 100]"),
            (self.allowed_token_ids is None or len(self.allowed_token_ids) > 0, "allowed_token_ids must not be empty"),
            (self.dry_multiplier >= 0, "dry_multiplier must be >= 0"),
            (self.dry_base >= 1, "dry_base must be >= 1"),
            (self.dry_allowed_length >= 1, "dry_allowed_length must be >= 1"),
            (self.dry_penalty_last_n >= 0, "dry_penalty_last_n must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# Where models recommend their own settings: GGUF `general.sampling.*` and generation_config.json.
GGUF_SAMPLING_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
    "general.sampling.penalty_last_n": "penalty_last_n",
}
GENERATION_CONFIG_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def recommended_sampling(metadata: dict | None = None, generation_config: dict | None = None) -> dict:
    """The sampling settings a model file recommends, as SamplingParams field values."""
    found = {field: metadata[key] for key, field in GGUF_SAMPLING_KEYS.items() if key in (metadata or {})}
    found.update(
        {
            key: generation_config[key]
            for key in GENERATION_CONFIG_KEYS
            if (generation_config or {}).get(key) is not None
        }
    )
    return found


def rng_state(seed: int | None) -> np.ndarray:
    """(1,) uint64 splitmix64 state; a random seed when None."""
    if seed is None:
        seed = secrets.randbits(64)
    return np.array([seed & MASK64], dtype=np.uint64)


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # the most likely tokens at that step (id, logprob), best first


def sample(
    logits: np.ndarray,
    params: SamplingParams,
    history_ids,
    rng: np.ndarray,
    num_output_tokens: int = 0,
    stop_token_ids=(),
    dry_breakers: np.ndarray | None = None,
    token_mask: np.ndarray | None = None,
) -> tuple[int, TokenLogprob | None]:
    """The next token of a request, and its logprobs when params.logprobs asks for them.

    logits (V,) float32, the model's; history_ids: the tokens so far (prompt and output); rng: the
    request's (1,) uint64 state (rng_state), advanced here, so the same seed gives the same tokens;
    stop_token_ids are masked while fewer than params.min_tokens of num_output_tokens are out;
    dry_breakers (V,) uint8 marks the tokens that end a DRY repeat (see dry_breaker_mask); token_mask, the
    grammar's (structured output), allows only its tokens: -1 when it allows none."""
    p = params
    logits = np.asarray(logits, dtype=np.float32)
    if num_output_tokens < p.min_tokens and stop_token_ids:
        logits = logits.copy()
        logits[list(stop_token_ids)] = -np.inf
    processed = process_logits(logits, history_ids, p, dry_breakers)
    recent = np.asarray(history_ids[-p.penalty_last_n :] if p.penalty_last_n else [], dtype=np.int64)
    token = _sampler.sample(
        processed,
        recent,
        p.temperature,
        p.top_k,
        p.top_p,
        p.min_p,
        p.repetition_penalty,
        p.presence_penalty,
        p.frequency_penalty,
        rng,
        p.typical_p,
        token_mask,
    )
    if token < 0:
        return token, None
    return token, (token_logprob(logits, token, p.logprobs) if p.logprobs is not None else None)


def token_logprob(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """log-softmax of the model's logits (before any sampling setting): the token's and the top ones."""
    logits = logits.astype(np.float64)
    finite = np.isfinite(logits)
    peak = logits[finite].max()
    lse = peak + np.log(np.exp(logits[finite] - peak).sum())
    best = np.argpartition(-logits, top)[:top] if top else np.empty(0, dtype=np.int64)
    best = best[np.argsort(-logits[best], kind="stable")]
    return TokenLogprob(int(token), float(logits[token] - lse), [(int(i), float(logits[i] - lse)) for i in best])


def process_logits(logits: np.ndarray, history_ids, p: SamplingParams, dry_breakers: np.ndarray | None) -> np.ndarray:
    """logit_bias, allowed and banned tokens, DRY: the steps before the sampler's own (a new array when
    any applies)."""
    if not (p.logit_bias or p.allowed_token_ids is not None or p.banned_token_ids or p.dry_multiplier > 0):
        return np.ascontiguousarray(logits, dtype=np.float32)
    out = np.array(logits, dtype=np.float32)
    vocab = len(out)
    if p.logit_bias:
        ids = np.fromiter((t for t in p.logit_bias if 0 <= t < vocab), dtype=np.int64)
        out[ids] += np.array([p.logit_bias[int(t)] for t in ids], dtype=np.float32)
    if p.allowed_token_ids is not None:
        mask = np.ones(vocab, dtype=bool)
        mask[[t for t in p.allowed_token_ids if 0 <= t < vocab]] = False
        out[mask] = -np.inf
    if p.banned_token_ids:
        out[[t for t in p.banned_token_ids if 0 <= t < vocab]] = -np.inf
    if p.dry_multiplier > 0 and len(history_ids) > 1:
        history = np.asarray(
            history_ids[-p.dry_penalty_last_n :] if p.dry_penalty_last_n else history_ids, dtype=np.int64
        )
        breakers = dry_breakers if dry_breakers is not None else np.zeros(vocab, dtype=np.uint8)
        penalties = np.zeros(vocab, dtype=np.float64)
        _sampler.dry_penalties(history, p.dry_multiplier, p.dry_base, p.dry_allowed_length, breakers, penalties)
        out -= penalties.astype(np.float32)
    return out


def dry_breaker_mask(token_texts: list[str], breakers: list[str]) -> np.ndarray:
    """(V,) uint8: 1 for tokens whose text contains a sequence breaker (they end a DRY repeat)."""
    mask = np.zeros(len(token_texts), dtype=np.uint8)
    if breakers:
        for i, text in enumerate(token_texts):
            if any(b in text for b in breakers):
                mask[i] = 1
    return mask
