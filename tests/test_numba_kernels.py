"""Numba kernels compile once per machine, into the user cache, and the compiling run says so."""

import os
import subprocess
import sys

import numpy as np

from mistralcli.numba_kernels.cpu.bandwidth import sum_chunks

PROBE = "from mistralcli.bench import measure_bandwidth; print(measure_bandwidth(1, 8, 1) > 0)"


def test_bandwidth_probe_sums_every_chunk():
    data = np.arange(1000, dtype=np.float32)
    for chunks in (1, 3, 7):
        assert sum_chunks(data, chunks) == float(data.sum(dtype=np.float64))


def test_first_run_notes_compilation_and_the_next_loads_from_the_cache(tmp_path):
    env = {**os.environ, "MISTRALCLI_CACHE": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert [run.stdout.strip() for run in runs] == ["True", "True"]
    assert "compiled Numba kernel sum_chunks" in runs[0].stderr and str(tmp_path) in runs[0].stderr
    assert "compiled" not in runs[1].stderr
    assert any((tmp_path / "numba").rglob("*.nbi"))
