"""The importance matrix, as llama.cpp's `llama-imatrix` computes and stores it, so either tool reads the other's.

For each matrix of the layers (`blk.*`; the output matrix with `with_output`), the sum over calibration tokens
of each input column's squared activation, and the count of tokens: `importance = sums / count`, the mean
squared input of each column, which the K and IQ quantizers take as the weight of each column's error. An
expert of a stacked (E, rows, cols) tensor has its own row of sums and its own count (the tokens routed to it).

The activations come from the one compute path: the model's ops are wrapped (`Collector`) while
mistral perplexity's computation runs over the text, windows of `ctx` tokens, so the run prints the text's
perplexity too, as llama-imatrix does. As llama.cpp, a dense product of fewer than 16 tokens is not counted.

The file (GGUF): `general.type = imatrix`, `imatrix.datasets` (the calibration files' names),
`imatrix.chunk_count` and `imatrix.chunk_size` (windows and their tokens), and for each matrix NAME the float32
tensors `NAME.in_sum2` (E, cols) and `NAME.counts` (E, 1). A matrix with a count of 0 (an expert no token
reached) gets importance 1 when read, as llama-quantize gives it."""

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mistralcli.errors import MistralError

_EXPERT = re.compile(r"^(.*)\[(\d+)\]$")  # a stacked tensor's expert, as mistralcli.models.moe names its views
MIN_TOKENS = 16


@dataclass
class Imatrix:
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (E, cols) float64
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (E,) int64
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def importance(self) -> dict[str, np.ndarray]:
        """name -> the mean squared activation of each column: (cols,), or (E, cols) for stacked experts."""
        out = {}
        for name, sums in self.sums.items():
            counts = self.counts[name].astype(np.float64)[:, None]
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0).astype(np.float32)
            out[name] = mean[0] if mean.shape[0] == 1 else mean
        return out


class Collector:
    """Stands in for a model's ops: each product's input adds its squared columns to its matrix's sums."""

    def __init__(self, ops, experts: int = 0, with_output: bool = False):
        self._ops = ops
        self.experts = max(int(experts), 1)
        self.with_output = with_output
        self.stats = Imatrix()

    def __getattr__(self, name):
        return getattr(self._ops, name)

    def matmul(self, x, w):
        self._add(x, w.name)
        return self._ops.matmul(x, w)

    def matmuls(self, x, ws):
        for w in ws:
            self._add(x, w.name)
        return self._ops.matmuls(x, ws)

    def logits(self, x, w):
        if self.with_output:
            self._add(x, w.name)
        return self._ops.logits(x, w)

    def _add(self, x: np.ndarray, name: str) -> None:
        stacked = _EXPERT.match(name)
        base, expert = (stacked.group(1), int(stacked.group(2))) if stacked else (name, 0)
        if not (base.startswith("blk.") or (self.with_output and base == "output.weight")):
            return
        if stacked is None and len(x) < MIN_TOKENS:
            return
        s = self.stats
        if base not in s.sums:
            rows = self.experts if stacked else 1
            s.sums[base] = np.zeros((rows, x.shape[1]), np.float64)
            s.counts[base] = np.zeros(rows, np.int64)
        x = np.asarray(x, dtype=np.float64)
        s.sums[base][expert] += np.einsum("ij,ij->j", x, x)
        s.counts[base][expert] += len(x)
        if not np.isfinite(s.sums[base][expert]).all():
            raise MistralError(f"{base}: its activations are not finite: no importance matrix from this model")


def collect(loaded, text: str, ctx: int = 512, with_output: bool = False, progress=None):
    """(Imatrix, Perplexity) of the loaded model over `text` (see the module's docstring)."""
    from mistralcli.quantize.perplexity import perplexity

    model = loaded.model
    collector = Collector(model.ops, getattr(model.args, "num_experts", 0), with_output)
    model.ops = collector
    try:
        result = perplexity(loaded, text, ctx, progress)
    finally:
        model.ops = collector._ops
    stats = collector.stats
    stats.chunk_count, stats.chunk_size = result.windows, ctx
    return stats, result


def save(stats: Imatrix, path: Path) -> None:
    """Write the GGUF imatrix (a temporary name renamed when whole)."""
    from gguf import Keys

    from mistralcli.quantize.gguf_file import gguf_writer

    with gguf_writer(path, "") as writer:
        writer.kv_data[0].pop(Keys.General.ARCHITECTURE, None)  # gguf's writer always adds one; an imatrix has none
        writer.add_type("imatrix")
        writer.add_array("imatrix.datasets", stats.datasets)
        writer.add_uint32("imatrix.chunk_count", stats.chunk_count)
        writer.add_uint32("imatrix.chunk_size", stats.chunk_size)
        for name in sorted(stats.sums):
            writer.add_tensor(f"{name}.in_sum2", stats.sums[name].astype(np.float32))
            writer.add_tensor(f"{name}.counts", stats.counts[name].astype(np.float32)[:, None])


def load(path: Path) -> Imatrix:
    """An imatrix GGUF (ours or llama-imatrix's); a clear error for anything else."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise MistralError(f"{path}: not a GGUF imatrix ({exc}; llama.cpp's older .dat format is not read)") from None
    kind = reader.fields.get("general.type")
    if kind is not None and kind.contents() != "imatrix":
        raise MistralError(f"{path}: a GGUF of type {kind.contents()!r}, not an imatrix")
    tensors = {t.name: t for t in reader.tensors}
    stats = Imatrix()
    for key in ("chunk_count", "chunk_size"):
        field_ = reader.fields.get(f"imatrix.{key}")
        setattr(stats, key, int(field_.contents()) if field_ is not None else 0)
    datasets = reader.fields.get("imatrix.datasets")
    stats.datasets = list(datasets.contents()) if datasets is not None else []
    for tname, tensor in tensors.items():
        if not tname.endswith(".in_sum2"):
            continue
        name = tname.removesuffix(".in_sum2")
        counts = tensors.get(f"{name}.counts")
        if counts is None:
            raise MistralError(f"{path}: {name} has sums and no counts")
        sums = np.asarray(tensor.data, dtype=np.float64)
        sums = sums.reshape(-1, sums.shape[-1])
        stats.sums[name] = sums
        stats.counts[name] = np.rint(np.asarray(counts.data, dtype=np.float64).reshape(-1)).astype(np.int64)
        if stats.counts[name].shape[0] != sums.shape[0]:
            raise MistralError(f"{path}: {name} has {sums.shape[0]} rows of sums and {stats.counts[name].size} counts")
    if not stats.sums:
        raise MistralError(f"{path}: no importance data in it (no *.in_sum2 tensors)")
    return stats
