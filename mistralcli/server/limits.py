"""API keys and per-key rate limits (requests and tokens per minute), with OpenAI's headers.

A limit is a bucket that refills continuously: `capacity` per minute, at most `capacity` banked. A
request takes one request and its prompt tokens (plus its max_tokens, when it gives one) at
admission; when it finishes, the difference to what it really used is settled (a bucket may go
below zero, and later requests wait for it). A request that finds a bucket short is refused with 429
and told when the bucket will hold enough (Retry-After), and nothing is taken.
"""

import hmac
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RateLimit:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @classmethod
    def parse(cls, spec: str) -> "RateLimit":
        """'60' (requests/min), '60:40000' (and tokens/min), ':40000' (tokens/min only), also with
        units: '60/min', '40000tok/min'. Raises ValueError."""
        parts = spec.replace(" ", "").split(":")
        if len(parts) > 2 or not any(parts):
            raise ValueError(f"rate limit {spec!r}: give REQUESTS[:TOKENS] per minute, e.g. 60:40000")
        numbers = []
        for part in parts:
            match = re.fullmatch(r"(\d+)(?:tok(?:ens)?)?(?:/min|/m)?", part) if part else None
            if part and (match is None or int(match.group(1)) == 0):
                raise ValueError(f"rate limit {spec!r}: {part!r} is not a positive count per minute")
            numbers.append(int(match.group(1)) if match else None)
        return cls(numbers[0], numbers[1] if len(numbers) > 1 else None)


@dataclass
class _Bucket:
    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """seconds until the bucket holds `amount` (inf when it never can)"""
        if amount > self.capacity:
            return float("inf")
        return max(0.0, (amount - self.level) * 60.0 / self.capacity)


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float = 0.0
    message: str = ""


class RateLimiter:
    """Buckets per key (an API key, or the client's address when the server has no keys)."""

    def __init__(self, limit: RateLimit, clock=time.monotonic):
        self.limit = limit
        self.clock = clock
        self._buckets: dict[str, dict[str, _Bucket]] = {}
        self._lock = threading.Lock()

    def _buckets_of(self, key: str, now: float) -> dict[str, _Bucket]:
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = {}
            if self.limit.requests_per_minute:
                buckets["requests"] = _Bucket(self.limit.requests_per_minute, self.limit.requests_per_minute, now)
            if self.limit.tokens_per_minute:
                buckets["tokens"] = _Bucket(self.limit.tokens_per_minute, self.limit.tokens_per_minute, now)
            self._buckets[key] = buckets
        for bucket in buckets.values():
            bucket.refill(now)
        return buckets

    def admit(self, key: str, tokens: int) -> Decision:
        """Take one request and `tokens` from key's buckets, or refuse and take nothing."""
        with self._lock:
            now = self.clock()
            buckets = self._buckets_of(key, now)
            wants = {"requests": 1, "tokens": tokens}
            waits = {name: b.wait_for(wants[name]) for name, b in buckets.items()}
            allowed = all(w == 0.0 for w in waits.values())
            if allowed:
                for name, bucket in buckets.items():
                    bucket.level -= wants[name]
            headers = self._headers(buckets)
            if allowed:
                return Decision(True, headers)
            name, wait = max(waits.items(), key=lambda item: item[1])
            if wait == float("inf"):
                return Decision(
                    False,
                    headers,
                    0.0,
                    f"this request needs {tokens} tokens but the limit is {int(buckets[name].capacity)} "
                    f"tokens per minute; ask for fewer max_tokens",
                )
            return Decision(False, headers, wait, f"rate limit reached for {name} per minute; retry in {wait:.1f} s")

    def settle(self, key: str, tokens: int) -> None:
        """Take `tokens` more from key's token bucket (negative: give back what was taken and not used)."""
        if not tokens:
            return
        with self._lock:
            buckets = self._buckets_of(key, self.clock())
            if "tokens" in buckets:
                bucket = buckets["tokens"]
                bucket.level = min(bucket.capacity, bucket.level - tokens)

    @staticmethod
    def _headers(buckets: dict[str, _Bucket]) -> dict[str, str]:
        headers = {}
        for name, bucket in buckets.items():
            headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, int(bucket.level)))
            headers[f"x-ratelimit-reset-{name}"] = f"{(bucket.capacity - bucket.level) * 60.0 / bucket.capacity:.3f}s"
        return headers


class ApiKeys:
    """The keys a server accepts (none: every request is allowed)."""

    def __init__(self, keys: list[str] | None = None, files: list[str | Path] | None = None):
        found = [k.strip() for k in keys or [] if k.strip()]
        for path in files or []:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise ValueError(f"API keys file {path}: {exc.strerror or exc}") from None
            found += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        self.keys = tuple(dict.fromkeys(found))

    def __bool__(self) -> bool:
        return bool(self.keys)

    def check(self, authorization: str | None, api_key: str | None = None) -> str | None:
        """The key of a valid 'Authorization: Bearer KEY' header or 'x-api-key: KEY' header (Anthropic's),
        else None (compared in constant time)."""
        given = [api_key.strip()] if api_key else []
        if authorization and authorization.startswith("Bearer "):
            given.insert(0, authorization[len("Bearer ") :].strip())
        for candidate in given:
            for key in self.keys:
                if hmac.compare_digest(candidate.encode(), key.encode()):
                    return key
        return None
