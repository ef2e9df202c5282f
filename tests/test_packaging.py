"""The source distribution holds every file the build needs (MANIFEST.in once left out _ext/*.pxi)."""

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_sdist_holds_every_file_the_build_needs(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("Cython")
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode:
        pytest.skip("not a git checkout")
    tracked = [name for name in listed.stdout.splitlines() if (ROOT / name).is_file()]
    source = tmp_path / "src"
    for name in tracked:  # a copy: building must not write into the checkout
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [sdist] = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = [
        name
        for name in tracked
        if name.startswith(("_ext/", "mistralcli/", "commands/", "numba_kernels/"))
        or name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in")
    ]
    assert any(name.endswith(".pxi") for name in needed)
    missing = sorted(set(needed) - members)
    assert not missing, f"the sdist lacks {missing}"
