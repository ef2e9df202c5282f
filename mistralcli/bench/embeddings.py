"""`mistral bench --embed N`: N sentences embedded, sentences per second, against sentence-transformers on the same
CPU in the same run (`--compare sentence-transformers`, in a process of its own). Both are timed from the texts to
the vectors (tokenizing included), after a warm-up, best of the repetitions; the vectors are compared too (their
lowest cosine)."""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = (
    "the a of and to in is that it was for on are as with his they at be this from have or by one had not but what "
    "all were when we there can an your which their said if do will each about how up out them then she many some so "
    "these would other into has more her two like him see time could no make than first been its who now people my "
    "made over did down only way find use may water long little very after words called just where most know get "
    "through back much before go good new write our used me man too any day same right look think also around another "
    "came come work three word must because does part even place well such here take why things help put years "
    "different away again off went old number great tell men say small every found still between name should home "
    "big give air line set own under read last never us left end along while might next sound below saw something "
    "thought both few those always looked show large often together asked house world going want school important "
    "until form food keep children feet land side without boy once animals life enough took sometimes four head "
    "above kind began almost live page got earth need far hand high year mother light parts country father let "
    "night following picture being study second eyes soon times story boys since white days ever paper hard near "
    "sentence better best across during today others sure means knew its try told young miles sun ways thing whole"
).split()


def sentences(count: int, seed: int = 0) -> list[str]:
    """count sentences of 4 to 40 words (a seeded draw: the same texts every run)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 40))]
        out.append(" ".join(words).capitalize() + rng.choice(".?!"))
    return out


def bench_mistralcli(model: str | None, texts: list[str], threads: int, repetitions: int, pooling: str | None = None):
    """(figures, loaded model, vectors) for mistralcli's embedder on texts."""
    from mistralcli.engine.embedder import Embedder
    from mistralcli.loading.loader import load_model

    start = time.perf_counter()
    loaded = load_model(model, threads=threads).with_pooling(pooling)
    if loaded.embedding is None:
        raise ValueError(f"{loaded.name} does not embed as it is: give --pooling mean (or last)")
    embedder = Embedder(loaded.model, loaded.tokenizer, loaded.embedding)
    load_s = time.perf_counter() - start
    embedder.embed(texts[:64], truncate=True)  # warm-up (a first run compiles the Numba kernels)
    times, vectors = [], None
    for _ in range(repetitions):
        start = time.perf_counter()
        vectors = embedder.embed(texts, truncate=True)
        times.append(time.perf_counter() - start)
    tokens = sum(map(len, embedder.tokenize(texts, truncate=True)))
    return _figures(len(texts), tokens, times, load_s), loaded, vectors


def bench_sentence_transformers(path: str, texts: list[str], threads: int, repetitions: int):
    """(figures, vectors) for sentence-transformers (torch, CPU) on the same texts, its default batch size."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = SentenceTransformer(path, device="cpu")
    load_s = time.perf_counter() - start
    model.encode(texts[:64])
    times, vectors = [], None
    for _ in range(repetitions):
        start = time.perf_counter()
        vectors = model.encode(texts, convert_to_numpy=True)
        times.append(time.perf_counter() - start)
    tokens = sum(
        len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    )
    return _figures(len(texts), tokens, times, load_s), vectors


def _peer_process(path: str, count: int, threads: int, repetitions: int) -> tuple[dict, np.ndarray]:
    """sentence-transformers measured in a process of its own: in ours, the kernels' idle threads (OpenMP's,
    Numba's) would take the cores from torch's, and slow it down tenfold."""
    with tempfile.TemporaryDirectory() as tmp:
        vectors_path = Path(tmp) / "vectors.npy"
        command = [sys.executable, "-m", "mistralcli.bench.embeddings", path, str(count), str(threads)]
        result = subprocess.run(
            [*command, str(repetitions), str(vectors_path)], capture_output=True, text=True, timeout=3600
        )
        if result.returncode != 0:
            raise ValueError(f"sentence-transformers failed: {result.stderr.strip()[-500:]}")
        return json.loads(result.stdout.strip().splitlines()[-1]), np.load(vectors_path)


def _figures(count: int, tokens: int, times: list[float], load_s: float) -> dict:
    best = min(times)
    return {
        "sentences": count,
        "tokens": tokens,
        "best_s": round(best, 4),
        "median_s": round(float(np.median(times)), 4),
        "sentences_per_s": round(count / best, 1),
        "tokens_per_s": round(tokens / best, 1),
        "load_s": round(load_s, 3),
    }


def lowest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    cosines = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(cosines.min())


def run(model: str | None, count: int, threads: int | None, repetitions: int, compare: str | None, pooling=None):
    """The benchmark's result (one JSON-able dict)."""
    threads = threads or os.cpu_count() or 1
    texts = sentences(count)
    ours, loaded, vectors = bench_mistralcli(model, texts, threads, repetitions, pooling)
    result = {
        "mode": "embed",
        "model": loaded.name,
        "model_path": str(loaded.path),
        "threads": threads,
        "pooling": loaded.embedding.pooling,
        "mistralcli": ours,
    }
    if compare == "sentence-transformers":
        theirs, their_vectors = _peer_process(str(loaded.path), count, threads, repetitions)
        result["sentence_transformers"] = theirs
        result["speedup"] = round(ours["sentences_per_s"] / theirs["sentences_per_s"], 2)
        result["lowest_cosine"] = round(lowest_cosine(vectors, their_vectors), 7)
    return result


def render(result: dict, console) -> None:
    """The result as a table (and the ratio) on the console."""
    from rich.table import Table

    title = f"{result['model']} · {result['threads']} threads · {result['mistralcli']['sentences']} sentences"
    table = Table(title=f"{title}, {result['pooling']} pooling")
    for column in ("engine", "sentences/s", "tokens/s", "best s", "median s", "load s"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for key, label in (("mistralcli", "mistralcli"), ("sentence_transformers", "sentence-transformers")):
        if key in result:
            f = result[key]
            cells = (f["sentences_per_s"], f["tokens_per_s"], f["best_s"], f["median_s"], f["load_s"])
            table.add_row(label, *map(str, cells))
    console.print(table)
    if "speedup" in result:
        console.print(
            f"mistralcli / sentence-transformers: {result['speedup']}x; lowest cosine {result['lowest_cosine']}"
        )


if __name__ == "__main__":  # the peer's process (see _peer_process): path count threads repetitions vectors.npy
    model_path, number, num_threads, reps, out = sys.argv[1:6]
    figures, peer_vectors = bench_sentence_transformers(model_path, sentences(int(number)), int(num_threads), int(reps))
    np.save(out, peer_vectors)
    print(json.dumps(figures))
