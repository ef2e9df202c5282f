"""Kernel registry: each op has a NumPy reference and faster backends with the same signatures.

Legend for shapes: T tokens, S cached positions, H query heads, Hkv key/value heads, D head dim,
K input features, N output features, V vocabulary.
"""

from mistralcli.reference.ops import ReferenceOps

_BACKENDS = {"reference": ReferenceOps}


def register_backend(name: str, cls) -> None:
    _BACKENDS[name] = cls


def get_ops(name: str = "cpu", threads: int | None = None):
    """Return an ops object by backend name ('reference' or 'cpu')."""
    if name == "cpu" and name not in _BACKENDS:
        from mistralcli.ops.cpu import CpuOps

        register_backend("cpu", CpuOps)
    if name not in _BACKENDS:
        raise ValueError(f"unknown ops backend {name!r} (known: {', '.join(sorted(_BACKENDS))})")
    return _BACKENDS[name](threads=threads)
