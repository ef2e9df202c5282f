"""Rotary position embedding frequencies, including Llama-3 and linear scaling."""

import math

import numpy as np


def inv_frequencies(
    head_dim: int, rope_theta: float, rope_scaling: dict | None = None, freq_factors: np.ndarray | None = None
) -> np.ndarray:
    """(D/2,) float64 inverse frequencies.

    rope_scaling: a Hugging Face `rope_scaling` dict ("llama3" or "linear"); freq_factors: GGUF's
    `rope_freqs.weight`, the per-frequency divisors llama.cpp stores for Llama-3 models.
    """
    inv_freq = 1.0 / (rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if freq_factors is not None:
        return inv_freq / np.asarray(freq_factors, dtype=np.float64)
    kind = (rope_scaling or {}).get("rope_type") or (rope_scaling or {}).get("type") or "default"
    if kind == "linear":
        return inv_freq / float(rope_scaling["factor"])
    if kind == "llama3":
        factor = float(rope_scaling["factor"])
        low = float(rope_scaling.get("low_freq_factor", 1.0))
        high = float(rope_scaling.get("high_freq_factor", 4.0))
        old_len = float(rope_scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return np.where(is_medium, smoothed, scaled)
    if kind != "default":
        raise ValueError(f"unsupported rope scaling type {kind!r}")
    return inv_freq


def cos_sin(positions: np.ndarray, inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (T, D/2) float32 of the angles positions (T,) x inv_freq (D/2,)."""
    angles = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
