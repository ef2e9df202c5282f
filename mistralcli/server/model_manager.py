"""The models of one server (`mistral serve --model A --model B`, `--models-dir DIR`): each a slot that is
unloaded, loading or loaded. A request names its model and waits while it loads (a worker thread loads it; the
other models keep serving). Loaded models are limited by count (`--max-loaded`) and memory (`--max-memory`: each
model's weights and KV pool); to make room the least recently used idle model is unloaded, never one with a
request in flight. A model idle past its keep-alive (`--keep-alive`, or a request's `keep_alive` as Ollama's
API has it) is unloaded too; it loads again on its next request."""

import asyncio
import dataclasses
import gc
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mistralcli.loading.discovery import human_size

log = logging.getLogger("mistralcli.server")

UNSET = object()  # a request that says nothing of keep_alive
EXPIRE_INTERVAL_S = 1.0  # how often idle models are checked against their keep-alive
DEFAULT_WAIT_S = 120.0  # how long a request waits for a busy model to make room before a 503

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value) -> float | None:
    """Ollama's keep_alive: seconds (a number), or a Go duration ("5m", "1h30m", "300ms"); a negative one, "-1",
    "never" or "forever" keeps the model loaded (None); 0 unloads it once idle. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        return None if value < 0 else float(value)
    text = str(value).strip().lower()
    if text in ("never", "forever", "inf"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", body)
        if not parts or "".join(n + u for n, u in parts) != body:
            raise ValueError(
                f"{value!r} is not a duration: give seconds, or 5m, 1h30m, 300ms (a negative one or never: kept loaded)"
            ) from None
        seconds = sign * sum(float(n) * _GO_UNITS[u] for n, u in parts)
    return None if seconds < 0 else seconds


_SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20}
_SIZE_UNITS |= {"g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes from "8GB", "512MiB", "1.5g" or a plain number of bytes. Raises ValueError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if not match or match[2] not in _SIZE_UNITS or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a size: give e.g. 8GB, 512MiB or a number of bytes")
    return int(float(match[1]) * _SIZE_UNITS[match[2]])


def state_memory(state) -> int:
    """Bytes a loaded model holds: its weights as stored (a GGUF's are mapped from the file), the copies its ops
    repacked for the multi-token kernels (CpuOps.tiles), and its KV pool."""
    total = 0
    for tensor in getattr(state.model, "weights", {}).values():
        data = getattr(tensor, "data", tensor)
        total += int(getattr(data, "nbytes", 0))
    total += int(getattr(getattr(state.model, "ops", None), "repacked_bytes", 0))
    if state.engine is not None:
        cache = state.engine.engine.cache
        total += cache.k.nbytes + cache.v.nbytes
    return total


def serving_parts(loaded, config) -> tuple:
    """A loaded model's engine (None for an encoder, which embeds only) and its ServerSettings fields."""
    from mistralcli.engine.embedder import Embedder
    from mistralcli.engine.engine import Engine
    from mistralcli.loading.discovery import file_identity

    engine = None
    if not loaded.is_encoder:
        engine = Engine(loaded.model, loaded.tokenizer, loaded.context_length, config)
    embedder = Embedder(loaded.model, loaded.tokenizer, loaded.embedding) if loaded.embedding is not None else None
    size, digest = file_identity(loaded.path)
    fields = {
        "chat_template": loaded.chat_template,
        "sampling_defaults": loaded.sampling_defaults,
        "embedder": embedder,
        "model_size": size,
        "model_digest": digest,
    }
    return engine, fields


def load_for_serving(spec: str | None, config, threads: int | None, isq: str | None, pooling: str | None) -> tuple:
    """Load a model and build its engine: a ModelSlot's loader (on a worker thread)."""
    from mistralcli.loading.loader import load_model

    return serving_parts(load_model(spec, threads=threads, isq=isq).with_pooling(pooling), config)


@dataclass
class ModelSlot:
    name: str
    load: Callable[[], tuple] | None  # on a worker thread: (Engine or None, the model's ServerSettings fields)
    size: int = 0  # bytes it is expected to take loaded, before it is (its files, and a fixed KV pool)
    path: str = ""  # where it lives, for listings
    state: object = None  # its ServerState while loaded
    status: str = "unloaded"  # "loading", "loaded"
    leases: int = 0  # requests holding it
    last_used: float = field(default_factory=time.monotonic)
    keep_alive: float | None = None  # seconds idle before it is unloaded; None: never
    memory: int = 0  # bytes it holds while loaded
    error: str | None = None  # why its last load failed
    loads: int = 0  # times it has been loaded

    def idle_s(self) -> float:
        return 0.0 if self.leases else time.monotonic() - self.last_used

    def expires_in(self) -> float | None:
        """Seconds until the keep-alive unloads it (None: never, or it is in use)."""
        if self.keep_alive is None or self.leases or self.load is None:
            return None
        return max(0.0, self.keep_alive - self.idle_s())

    @property
    def busy(self) -> bool:
        engine = self.state.engine if self.state is not None else None
        return self.leases > 0 or (engine is not None and engine.num_streams > 0)


class ModelError(Exception):
    """A model could not be had: `status`, `code` and the message, for the handler's APIError."""

    def __init__(self, status: int, message: str, code: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.code, self.retry_after = status, code, retry_after


class ModelManager:
    def __init__(self, shared):
        self.shared = shared
        self.slots: dict[str, ModelSlot] = {}
        self.max_loaded: int | None = None
        self.memory_budget: int | None = None  # bytes
        self.keep_alive: float | None = None  # the default for each model
        self.wait_s = DEFAULT_WAIT_S
        self._lock: asyncio.Lock | None = None  # one load (and its evictions) at a time
        self._released: asyncio.Event | None = None
        self._expiring: set[str] = set()

    # ---- the list
    def add(self, name: str, load=None, state=None, size: int = 0, path: str = "") -> ModelSlot:
        if name in self.slots:
            raise ValueError(f"two models are named {name!r}")
        slot = ModelSlot(name, load, size, str(path), keep_alive=self.keep_alive)
        if state is not None:
            slot.state, slot.status, slot.memory, slot.loads = state, "loaded", state_memory(state), 1
        self.slots[name] = slot
        return slot

    def find(self, name: str | None) -> ModelSlot | None:
        """The slot a request's model names (none named: the first model); Ollama's ":latest" tag is optional."""
        if not name:
            return next(iter(self.slots.values()), None)
        return self.slots.get(name) or self.slots.get(name.removesuffix(":latest"))

    def names(self) -> list[str]:
        return list(self.slots)

    def loaded(self) -> list[ModelSlot]:
        return [s for s in self.slots.values() if s.status == "loaded"]

    def used_memory(self) -> int:
        return sum(s.memory for s in self.loaded())

    # ---- a request's model
    async def acquire(self, name: str | None, keep_alive=UNSET):
        """The named model's ServerState, loaded if it was not (the caller waits); hold it until release().
        Raises LookupError for a name not served, ModelError when it cannot be loaded."""
        slot = self.find(name)
        if slot is None:
            raise LookupError(name)
        while slot.status != "loaded":
            await self._load(slot)
        slot.leases += 1
        slot.last_used = time.monotonic()
        if keep_alive is not UNSET:
            slot.keep_alive = keep_alive
        return slot.state

    def release(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is None or slot.leases == 0:
            return
        slot.leases -= 1
        slot.last_used = time.monotonic()
        if self._released is not None:
            self._released.set()
        if slot.leases == 0 and slot.keep_alive == 0:
            self._schedule_expiry(slot)

    async def _load(self, slot: ModelSlot) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if slot.status == "loaded":  # loaded by the request that held the lock
                return
            if slot.load is None:
                raise ModelError(503, f"the model {slot.name!r} is not loaded and cannot be", "model_unavailable")
            slot.status = "loading"
            started = time.perf_counter()
            try:
                await self._make_room(slot.size, slot)
                engine, fields = await asyncio.get_running_loop().run_in_executor(None, slot.load)
                settings = dataclasses.replace(self.shared.settings, model_name=slot.name, **fields)
                state = self.shared.model_state(engine, settings)
            except ModelError:
                slot.status = "unloaded"
                raise
            except Exception as exc:
                slot.status, slot.error = "unloaded", str(exc)
                log.warning("the model %s could not be loaded: %s", slot.name, exc)
                raise ModelError(
                    500, f"the model {slot.name!r} could not be loaded: {exc}", "model_load_failed"
                ) from None
            slot.state, slot.status, slot.error = state, "loaded", None
            slot.memory, slot.loads, slot.last_used = state_memory(state), slot.loads + 1, time.monotonic()
            log.info("loaded %s in %.1f s (%s)", slot.name, time.perf_counter() - started, human_size(slot.memory))
            try:  # its real size may be over the estimate: make room for that too
                await self._make_room(0, slot)
            except ModelError:
                await self._unload(slot)
                raise

    async def _make_room(self, needed: int, loading: ModelSlot) -> None:
        """Unload least recently used idle models until `needed` more bytes and one more model fit (the loading
        one not counted); wait for a busy one to go idle; a ModelError after wait_s, or at once when nothing could
        ever make room."""
        deadline = time.monotonic() + self.wait_s
        budget = self.memory_budget
        while True:
            others = [s for s in self.loaded() if s is not loading]
            count_ok = self.max_loaded is None or len(others) + 1 <= self.max_loaded
            memory = sum(s.memory for s in others) + (loading.memory if loading.status == "loaded" else needed)
            if count_ok and (budget is None or memory <= budget):
                return
            own = loading.memory if loading.status == "loaded" else needed
            if budget is not None and own > budget:
                raise ModelError(
                    503,
                    f"the model {loading.name!r} needs {human_size(own)}, more than the server's memory budget "
                    f"(--max-memory {human_size(budget)})",
                    "model_too_large",
                )
            idle = [s for s in others if not s.busy and s.load is not None]
            if idle:
                victim = min(idle, key=lambda s: s.last_used)
                log.info("unloading %s (idle %.0f s) to make room for %s", victim.name, victim.idle_s(), loading.name)
                await self._unload(victim)
                continue
            if not any(s.load is not None for s in others):
                raise ModelError(503, "the models loaded cannot be unloaded to make room", "model_capacity")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelError(
                    503,
                    f"every loaded model is busy; {loading.name!r} could not be loaded in {self.wait_s:.0f} s",
                    "models_busy",
                    retry_after=5,
                )
            self._released = self._released or asyncio.Event()
            self._released.clear()
            try:
                await asyncio.wait_for(self._released.wait(), remaining)
            except TimeoutError:
                pass

    async def _unload(self, slot: ModelSlot) -> None:
        state = slot.state
        slot.state, slot.status, slot.memory = None, "unloaded", 0
        if state is not None:
            await asyncio.get_running_loop().run_in_executor(None, state.shutdown)
        gc.collect()

    async def unload(self, name: str) -> bool:
        """Unload the named model now if it is idle (Ollama's keep_alive 0 on an empty request)."""
        slot = self.find(name)
        if slot is None or slot.status != "loaded" or slot.busy or slot.load is None:
            return False
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if slot.status == "loaded" and not slot.busy:
                await self._unload(slot)
                log.info("unloaded %s", slot.name)
                return True
        return False

    # ---- keep-alive
    def expire(self) -> None:
        """Unload the models idle past their keep-alive (the server calls this every EXPIRE_INTERVAL_S)."""
        for slot in self.loaded():
            left = slot.expires_in()
            if left is not None and left <= 0 and not slot.busy:
                self._schedule_expiry(slot)

    def _schedule_expiry(self, slot: ModelSlot) -> None:
        if slot.name in self._expiring:
            return
        self._expiring.add(slot.name)

        async def expire_one():
            try:
                left = slot.expires_in()
                if left is not None and left <= 0:
                    await self.unload(slot.name)
            finally:
                self._expiring.discard(slot.name)

        asyncio.ensure_future(expire_one())

    async def shutdown(self) -> None:
        for slot in self.loaded():
            await self._unload(slot)

    # ---- descriptions
    def describe(self, slot: ModelSlot) -> dict:
        """What `mistral ps` and /v1/ps show of a model."""
        out = {
            "id": slot.name,
            "status": slot.status,
            "path": slot.path,
            "memory_bytes": slot.memory,
            "requests_running": slot.leases,
            "idle_s": round(slot.idle_s(), 1) if slot.status == "loaded" else None,
            "keep_alive_s": slot.keep_alive,
            "expires_in_s": None,
            "loads": slot.loads,
        }
        if slot.status == "loaded":
            left = slot.expires_in()
            out["expires_in_s"] = None if left is None else round(left, 1)
            out["context_length"] = slot.state.context_length
            if slot.state.engine is not None:
                stats = slot.state.engine.stats()
                out["kv_blocks_used"], out["kv_blocks_total"] = stats["kv_blocks_used"], stats["kv_blocks_total"]
        if slot.error:
            out["error"] = slot.error
        return out
