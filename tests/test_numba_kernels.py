"""Numba kernels compile once per machine, into the user cache, and the compiling run says so."""

import os
import subprocess
import sys

import numpy as np

from mistralcli.numba_kernels.cpu.bandwidth import sum_chunks

PROBE = "from mistralcli.bench.offline import measure_bandwidth; print(measure_bandwidth(1, 8, 1) > 0)"


def test_bandwidth_probe_sums_every_chunk():
    data = np.arange(1000, dtype=np.float32)
    for chunks in (1, 3, 7):
        assert sum_chunks(data, chunks) == float(data.sum(dtype=np.float64))


def test_first_run_notes_compilation_and_the_next_loads_from_the_cache(tmp_path):
    env = {**os.environ, "MISTRALCLI_CACHE": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    runs = [
        subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
        for _ in range(2)
    ]
    assert [run.stdout.strip() for run in runs] == ["True", "True"]
    assert "compiled Numba kernel sum_chunks" in runs[0].stderr and str(tmp_path) in runs[0].stderr
    assert "compiled" not in runs[1].stderr
    assert any((tmp_path / "numba").rglob("*.nbi"))


def test_expert_routing_kernels_equal_their_numpy_references():
    from mistralcli.ops.cpu import CpuOps
    from mistralcli.reference.ops import ReferenceOps

    cpu, ref = CpuOps(threads=1), ReferenceOps()
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((37, 8)).astype(np.float32)
    logits[5] = 0.5  # all tied: the lower experts first
    logits[6, [2, 6]] = 9.0
    for k, renormalize in ((1, False), (2, True), (3, False), (8, True)):
        ids, weights = cpu.route_experts(logits, k, renormalize)
        ref_ids, ref_weights = ref.route_experts(logits, k, renormalize)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(weights, ref_weights, rtol=1e-6, atol=0)
        assert list(ids[5]) == list(range(k))  # ties: the lower experts first
        assert list(ids[6][: min(k, 2)]) == [2, 6][: min(k, 2)]
        if renormalize:
            np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
        order, offsets = cpu.group_by_expert(ids, 8)
        ref_order, ref_offsets = ref.group_by_expert(ids, 8)
        np.testing.assert_array_equal(order, ref_order)
        np.testing.assert_array_equal(offsets, ref_offsets)
        assert sorted(order) == list(range(ids.size))
        for e in range(8):  # each group is expert e's, tokens ascending
            group = order[offsets[e] : offsets[e + 1]]
            assert (ids.reshape(-1)[group] == e).all() and (np.diff(group) > 0).all()
    rows = rng.standard_normal((50, 16)).astype(np.float32)
    targets = rng.integers(0, 9, size=50)
    scales = rng.random(50).astype(np.float32)
    out, expected = np.ones((9, 16), np.float32), np.ones((9, 16), np.float32)
    cpu.scatter_add_rows(out, rows, targets, scales)
    ref.scatter_add_rows(expected, rows, targets, scales)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
