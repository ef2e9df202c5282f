"""NumPy reference ops: the oracle every faster backend is tested against (float32 throughout)."""

import math

import numpy as np

from mistralcli.quant_tensor import QuantTensor


class ReferenceOps:
    name = "reference"

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def decode_step(self, model):
        """The backend's one-call decode step for `model`, or None: the reference decodes through forward."""
        return None

    def matmuls(self, x: np.ndarray, ws: list) -> list[np.ndarray]:
        """x @ w^T for each w of ws (projections of one input: backends may share work between them)."""
        return [self.matmul(x, w) for w in ws]

    def matmul(self, x: np.ndarray, w: QuantTensor) -> np.ndarray:
        """x (T, K) float32 @ w (N, K)^T -> (T, N) float32."""
        return x @ w.dequantize().T

    def logits(self, x: np.ndarray, w: QuantTensor) -> np.ndarray:
        """The output projection, x (T, K) -> (T, V): a product like the others here; backends may take
        a different path for it (see CpuOps.logits)."""
        return self.matmul(x, w)

    def embedding(self, w: QuantTensor, token_ids: np.ndarray) -> np.ndarray:
        """Rows of w (V, D) for token_ids (T,) -> (T, D) float32."""
        rows = np.asarray(w.data)[token_ids]
        return QuantTensor(w.name, w.ggml_type, (len(token_ids), w.shape[1]), rows).dequantize()

    def rmsnorm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
        """x (T, K) -> x / sqrt(mean(x^2) + eps) * weight."""
        variance = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(variance + eps)) * weight

    def rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool) -> np.ndarray:
        """Rotate x (T, H, D) by angles with cos/sin (T, D/2).

        interleaved: pairs are (x[2i], x[2i+1]) (GGML's "normal" rope, GGUF llama weights);
        otherwise (x[i], x[i + D/2]) (Hugging Face rotate_half, "neox").
        """
        cos = cos[:, None, :]
        sin = sin[:, None, :]
        out = np.empty_like(x)
        if interleaved:
            a, b = x[..., 0::2], x[..., 1::2]
            out[..., 0::2] = a * cos - b * sin
            out[..., 1::2] = a * sin + b * cos
        else:
            half = x.shape[-1] // 2
            a, b = x[..., :half], x[..., half:]
            out[..., :half] = a * cos - b * sin
            out[..., half:] = b * cos + a * sin
        return out

    def paged_attention(self, q, k, v, block_table, q_positions, scale: float, window: int = 0) -> np.ndarray:
        """Causal attention of one sequence's queries over one layer of a paged cache.

        q (T, H, D); k/v (NB, BS, Hkv, D), float32 or float16; block_table (blocks,) the sequence's blocks in order;
        q_positions (T,). A query at position p sees positions 0..p (the last `window` of them when
        window > 0). -> (T, H, D)."""
        q_positions = np.asarray(q_positions, dtype=np.int64)
        every = np.arange(int(q_positions.max()) + 1)
        blocks, offsets = np.asarray(block_table)[every // k.shape[1]], every % k.shape[1]
        keys, values = (np.asarray(a[blocks, offsets], dtype=np.float32) for a in (k, v))  # a float16 cache, widened
        return self.attention(q, keys, values, q_positions, every, scale, window)

    def attention(self, q, k, v, q_positions, k_positions, scale: float, window: int = 0) -> np.ndarray:
        """Causal GQA attention.

        q (T, H, D), k/v (S, Hkv, D), q_positions (T,), k_positions (S,) -> (T, H, D).
        A query at position p sees the keys at positions <= p, and with a sliding window only those
        > p - window (the last `window` positions, itself included), as transformers and llama.cpp mask.
        """
        num_heads, num_kv_heads = q.shape[1], k.shape[1]
        group = num_heads // num_kv_heads
        q_positions, k_positions = np.asarray(q_positions), np.asarray(k_positions)
        mask = k_positions[None, :] <= q_positions[:, None]  # (T, S)
        if window:
            mask &= k_positions[None, :] > q_positions[:, None] - window
        out = np.empty_like(q)
        for kv_head in range(num_kv_heads):
            heads = slice(kv_head * group, (kv_head + 1) * group)
            qh = q[:, heads, :].transpose(1, 0, 2)  # (group, T, D)
            scores = (qh @ k[:, kv_head, :].T) * scale  # (group, T, S)
            scores = np.where(mask[None], scores, -np.inf)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            out[:, heads, :] = (probs @ v[:, kv_head, :]).transpose(1, 0, 2)
        return out

    def layernorm(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
        """x (T, K) -> (x - mean) / sqrt(var + eps) * weight + bias (the statistics in float64)."""
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=-1, keepdims=True)
        var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
        return ((x64 - mean) / np.sqrt(var + eps)).astype(np.float32) * weight + bias

    def gelu(self, x: np.ndarray) -> np.ndarray:
        """The exact GELU, x * (1 + erf(x / sqrt 2)) / 2."""
        from scipy.special import erf

        x64 = x.astype(np.float64)
        return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(np.float32)

    def encoder_attention(self, q, k, v, starts: np.ndarray, scale: float) -> np.ndarray:
        """Bidirectional attention of packed sequences: q, k, v (T, H, D), starts (B + 1,) the sequences' bounds;
        each token attends to every token of its own sequence. -> (T, H, D)."""
        out = np.empty_like(q)
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            qs, ks, vs = (t[a:b].transpose(1, 0, 2) for t in (q, k, v))  # (H, n, D)
            scores = (qs @ ks.transpose(0, 2, 1)).astype(np.float64) * scale
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            out[a:b] = (probs @ vs.astype(np.float64)).astype(np.float32).transpose(1, 0, 2)
        return out

    def pool(self, h: np.ndarray, starts: np.ndarray, mode: str) -> np.ndarray:
        """One vector per packed sequence of h (T, K): "mean" of its tokens, "cls" (its first) or "last"."""
        bounds = list(zip(starts[:-1], starts[1:], strict=True))
        if mode == "mean":
            return np.stack([h[a:b].astype(np.float64).mean(axis=0) for a, b in bounds]).astype(np.float32)
        return np.stack([h[a] if mode == "cls" else h[b - 1] for a, b in bounds])

    def swiglu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        """silu(gate) * up, (T, F)."""
        return gate / (1.0 + np.exp(-gate)) * up

    def route_experts(self, logits: np.ndarray, k: int, renormalize: bool) -> tuple[np.ndarray, np.ndarray]:
        """Each token's top-k experts of a softmax over logits (T, E): ids (T, k) int32 (ties: the lower
        expert first) and weights (T, k) float32, renormalized to sum 1 when asked."""
        logits = np.asarray(logits, dtype=np.float64)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        ids = np.argsort(-probs, axis=-1, kind="stable")[:, :k].astype(np.int32)
        weights = np.take_along_axis(probs, ids, axis=-1)
        if renormalize:
            weights = weights.astype(np.float32).astype(np.float64) / weights.sum(axis=-1, keepdims=True)
        return ids, weights.astype(np.float32)

    def group_by_expert(self, ids: np.ndarray, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
        """The flat (token * k + slot) indices grouped by expert, tokens in order: order (T*k,) and
        offsets (E + 1,), expert e's at order[offsets[e]:offsets[e + 1]]."""
        flat = np.asarray(ids).reshape(-1)
        order = np.argsort(flat, kind="stable").astype(np.int64)
        offsets = np.zeros(num_experts + 1, dtype=np.int64)
        np.cumsum(np.bincount(flat, minlength=num_experts), out=offsets[1:])
        return order, offsets

    def scatter_add_rows(self, out: np.ndarray, rows: np.ndarray, targets: np.ndarray, scales: np.ndarray) -> None:
        """out[targets[i]] += scales[i] * rows[i], in order (targets may repeat)."""
        for i in range(len(rows)):
            out[targets[i]] += scales[i] * rows[i]

    def geglu_tanh(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        """gelu(gate) * up with GELU's tanh approximation (PyTorch's gelu(approximate="tanh")), (T, F)."""
        inner = np.float32(math.sqrt(2.0 / math.pi)) * (gate + np.float32(0.044715) * gate * gate * gate)
        return np.float32(0.5) * gate * (np.float32(1.0) + np.tanh(inner)) * up
