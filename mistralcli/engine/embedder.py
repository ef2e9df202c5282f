"""Embeddings: texts (or token ids) to vectors, pooled and normalised as the model says.

An encoder (models/bert.py) runs many inputs in one forward, packed: the inputs are sorted by length and cut
into batches of up to `max_batch_tokens` tokens. A decoder embeds too (as llama.cpp's --embedding): its final
hidden states, pooled by mean or last token, one input at a time through a private cache. `AsyncEmbedder` is the
server's: requests that arrive while a batch computes join the next one, so concurrent clients share forwards.
"""

import asyncio
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mistralcli.json_file import read_json

POOLINGS = ("mean", "cls", "last")


class EmbeddingError(ValueError):
    """An input the model cannot embed (too long, empty, an id outside the vocabulary), naming it."""

    def __init__(self, message: str, param: str = "input"):
        super().__init__(message)
        self.param = param


@dataclass
class EmbeddingConfig:
    pooling: str  # "mean", "cls" or "last"
    normalize: bool  # to unit length (cosine similarity is then a dot product)
    max_length: int  # tokens per input
    dimensions: int  # the vector's length
    matryoshka: bool = False  # the vector's leading dimensions are an embedding too: `dimensions` may cut it

    @classmethod
    def of_directory(cls, directory: Path, hidden: int, context: int) -> "EmbeddingConfig":
        """A sentence-transformers model's own: its pooling (1_Pooling/config.json), whether it normalises
        (a Normalize module in modules.json), its max_seq_length; mean pooling and normalised otherwise."""
        modules = read_json(directory / "modules.json")
        modules = modules if isinstance(modules, list) else []
        pooling = "mean"
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling"):
                pooling = _pooling_mode(read_json(directory / str(module.get("path", "")) / "config.json"))
        normalize = not modules or any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        bert_config = read_json(directory / "sentence_bert_config.json")
        max_length = min(int(bert_config.get("max_seq_length") or context), context)
        config = {**read_json(directory / "config.json"), **read_json(directory / "config_sentence_transformers.json")}
        matryoshka = bool(config.get("is_matryoshka") or config.get("matryoshka_dimensions"))
        return cls(pooling, normalize, max_length, hidden, matryoshka)


def _pooling_mode(config: dict) -> str:
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_lasttoken"):
        return "last"
    return "mean"


class Embedder:
    """embed(inputs) -> (N, dimensions) float32 vectors. inputs: texts or token id lists."""

    def __init__(self, model, tokenizer, config: EmbeddingConfig, max_batch_tokens: int = 512):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.max_batch_tokens = max_batch_tokens
        self.is_encoder = getattr(model, "is_encoder", False)
        self.lock = threading.Lock()  # one computation at a time (the kernels use every core)
        self._cache = None  # a decoder's private paged cache, made on first use

    # ---- inputs
    def tokenize(self, inputs: list, truncate: bool = False) -> list[list[int]]:
        """Each input's token ids (texts encoded with the model's special tokens); an input over max_length is
        cut when truncate, else refused (EmbeddingError naming it)."""
        if not inputs:
            raise EmbeddingError("input: give at least one input")
        texts = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        encoded: dict[int, list[int]] = {}
        if texts:
            for i, ids in zip(texts, self.encode([inputs[i] for i in texts]), strict=True):
                encoded[i] = ids
        vocab = self.tokenizer.vocab_size
        out = []
        for i, x in enumerate(inputs):
            ids = encoded[i] if i in encoded else list(x)
            if not ids:
                raise EmbeddingError(
                    f"input.{i}: the input is empty" if len(inputs) > 1 else "input: the input is empty"
                )
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise EmbeddingError(f"input.{i}: token id {bad[0]} is outside the vocabulary ({vocab})")
            if len(ids) > self.config.max_length:
                if not truncate:
                    raise EmbeddingError(
                        f"input.{i}: {len(ids)} tokens; this model embeds at most {self.config.max_length}"
                    )
                ids = ids[: self.config.max_length - 1] + ids[-1:] if self.is_encoder else ids[: self.config.max_length]
            out.append(ids)
        return out

    def encode(self, texts: list[str], add_special: bool = True) -> list[list[int]]:
        """The texts' token ids as the model embeds them (an encoder's with its [CLS] ... [SEP])."""
        if self.is_encoder:  # the tokenizer's own post-processor
            encoded = self.tokenizer.hf_tokenizer.encode_batch(texts, add_special_tokens=add_special)
            return [e.ids for e in encoded]
        return [self.tokenizer.encode(t, add_special=add_special) for t in texts]

    # ---- vectors
    def embed(self, inputs: list, truncate: bool = False, dimensions: int | None = None) -> np.ndarray:
        return self.embed_ids(self.tokenize(inputs, truncate), dimensions)

    def check_dimensions(self, dimensions: int | None) -> None:
        full = self.config.dimensions
        if dimensions is None or dimensions == full:
            return
        if not self.config.matryoshka:
            raise EmbeddingError(f"dimensions: this model's vectors have {full} and cannot be shortened", "dimensions")
        if not 1 <= dimensions <= full:
            raise EmbeddingError(f"dimensions: give 1 to {full}, not {dimensions}", "dimensions")

    def embed_ids(self, sequences: list[list[int]], dimensions: int | None = None) -> np.ndarray:
        """Vectors of token id sequences (already checked by tokenize), in their order."""
        self.check_dimensions(dimensions)
        return self.shorten(self.vectors(sequences), dimensions)

    def vectors(self, sequences: list[list[int]]) -> np.ndarray:
        """The full vectors, pooled (and normalised where the model is), in the sequences' order."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        vectors = np.empty((len(sequences), self.config.dimensions), dtype=np.float32)
        with self.lock:
            for batch in self._batches([sequences[i] for i in order]):
                for k, vector in enumerate(self._forward(batch)):
                    vectors[order[batch.first + k]] = vector
        return _unit(vectors) if self.config.normalize else vectors

    def shorten(self, vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
        """The first `dimensions` of each vector, to unit length again (a Matryoshka model's shorter vector)."""
        if dimensions is None or dimensions == self.config.dimensions:
            return vectors
        return _unit(vectors[:, :dimensions])

    def _batches(self, sorted_sequences: list[list[int]]):
        batch, tokens, first = [], 0, 0
        for k, ids in enumerate(sorted_sequences):
            if batch and tokens + len(ids) > self.max_batch_tokens:
                yield _Batch(first, batch)
                batch, tokens, first = [], 0, k
            batch.append(ids)
            tokens += len(ids)
        if batch:
            yield _Batch(first, batch)

    def _forward(self, batch: "_Batch") -> np.ndarray:
        ops = self.model.ops
        if self.is_encoder:
            ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in batch.sequences])
            starts = np.concatenate([[0], np.cumsum([len(s) for s in batch.sequences])]).astype(np.int64)
            h = self.model.embed_tokens(ids, np.zeros_like(ids), starts)
            return ops.pool(h, starts, self.config.pooling)
        pooled = []
        for ids in batch.sequences:  # a decoder: one sequence at a time through its own cache
            h = self.model.hidden_states(np.asarray(ids), np.arange(len(ids)), self._decoder_cache())
            pooled.append(ops.pool(h, np.array([0, len(ids)]), self.config.pooling)[0])
        return np.stack(pooled)

    def _decoder_cache(self):
        if self._cache is None:
            from mistralcli.engine.paged_cache import PagedKVCache

            a, block = self.model.args, 16
            num_blocks = -(-self.config.max_length // block)
            cache = PagedKVCache(a.num_hidden_layers, num_blocks, block, a.num_key_value_heads, a.head_dim)
            self._cache = cache.view(list(range(num_blocks)))
        return self._cache


@dataclass
class _Batch:
    first: int  # its first sequence's place among the sorted ones
    sequences: list[list[int]]


class AsyncEmbedder:
    """The server's embedder: `await embed_ids(sequences)` from the event loop; a worker thread computes, and the
    requests that wait meanwhile are merged into its next forward (up to max_batch_tokens)."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="embedder", daemon=True)
        self.thread.start()

    async def embed_ids(self, sequences: list[list[int]], dimensions: int | None = None) -> np.ndarray:
        self.embedder.check_dimensions(dimensions)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.put((sequences, future, loop))
        return self.embedder.shorten(await future, dimensions)

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Stop the worker once the inputs queued before this are embedded."""
        self.queue.put(None)
        self.thread.join(timeout)

    def _work(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            waiting = [first]
            tokens = sum(map(len, waiting[0][0]))
            while tokens < self.embedder.max_batch_tokens:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # shutting down: after these
                    self.queue.put(None)
                    break
                waiting.append(more)
                tokens += sum(map(len, more[0]))
            everything = [ids for sequences, _, _ in waiting for ids in sequences]
            try:
                vectors, error = self.embedder.vectors(everything), None
            except Exception as exc:  # handed to each waiting request
                vectors, error = None, exc
            start = 0
            for sequences, future, loop in waiting:
                part = None if vectors is None else vectors[start : start + len(sequences)]
                start += len(sequences)
                loop.call_soon_threadsafe(_settle, future, part, error)


def _settle(future: asyncio.Future, vectors, error) -> None:
    if future.done():  # the client left
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(vectors)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
