"""The batch benchmark: N short prompts through `mistral run --batch --each-line`, the same prompts through N
sequential `mistral run`s, and through llama-cpp-python in a loop (one model load, one chat completion a prompt),
in one run, greedy, the same max_tokens. Each is timed from its process's start to its last answer (what a shell
script waits for). llama.cpp runs with its CPU weight repacking off, as in ../shared/bench.

python -m mistralcli.bench.batch [--prompts 256] [--sequential 256] [--max-tokens 32] [--llama-python PY] [--json]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = ["France", "Japan", "Kenya", "Peru", "Norway", "Egypt", "Canada", "India", "Chile", "Italy", "Spain"]
QUESTIONS = [
    "What is the capital of {}?",
    "Name one food people eat in {}.",
    "What language is spoken in {}?",
    "Give one fact about {}.",
]

LLAMA_LOOP = r"""
import json, sys, time
began = time.perf_counter()
import llama_cpp.llama_cpp as C
default = C.llama_model_default_params
def no_repack():
    p = default(); p.use_extra_bufts = False; return p
C.llama_model_default_params = no_repack
from llama_cpp import Llama
model, threads, max_tokens, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
tokens = 0
for prompt in open(path, encoding="utf-8").read().splitlines():
    messages = [{"role": "user", "content": prompt}]
    out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0)
    tokens += out["usage"]["completion_tokens"]
print(json.dumps({"seconds": time.perf_counter() - began, "completion_tokens": tokens}))
"""


def prompts(count: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)].format(SUBJECTS[(i // len(QUESTIONS)) % len(SUBJECTS)]) + f" ({i})"
            for i in range(count)]  # fmt: skip


def mistral(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mistralcli", *args], capture_output=True, text=True, check=False)


def run_batch(model: str, path: Path, max_tokens: int, threads: int) -> dict:
    began = time.perf_counter()
    result = mistral("run", *(["-m", model] if model else []), "--batch", str(path), "--each-line", "-t", "0",
                     "-n", str(max_tokens), "--threads", str(threads))  # fmt: skip
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"mistral run --batch failed: {result.stderr[-2000:]}")
    tokens = sum(
        json.loads(line)["response"]["body"]["usage"]["completion_tokens"] for line in result.stdout.splitlines()
    )
    return {"seconds": seconds, "completion_tokens": tokens, "prompts": len(result.stdout.splitlines())}


def run_sequential(model: str, texts: list[str], max_tokens: int, threads: int) -> dict:
    began = time.perf_counter()
    tokens = 0
    for text in texts:
        result = mistral("run", *(["-m", model] if model else []), text, "-t", "0", "-n", str(max_tokens),
                         "--threads", str(threads), "--json")  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"mistral run failed: {result.stderr[-2000:]}")
        tokens += json.loads(result.stdout)["usage"]["completion_tokens"]
    return {"seconds": time.perf_counter() - began, "completion_tokens": tokens, "prompts": len(texts)}


def run_llama(python: str, model: str, path: Path, max_tokens: int, threads: int, count: int) -> dict | None:
    result = subprocess.run(
        [python, "-c", LLAMA_LOOP, model, str(threads), str(max_tokens), str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        print(f"llama-cpp-python failed or is not installed for {python}: {result.stderr[-500:]}", file=sys.stderr)
        return None
    return {**json.loads(result.stdout.splitlines()[-1]), "prompts": count}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="default: the default model")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--sequential", type=int, default=256, help="how many of them run as separate processes")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-python", default=sys.executable, help="a Python with llama-cpp-python")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from mistralcli.loading.resolve import resolve_model

    model_path = str(resolve_model(args.model or None))
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.txt"
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        figures = {"batch": run_batch(args.model, path, args.max_tokens, args.threads)}
        figures["sequential"] = run_sequential(args.model, texts[: args.sequential], args.max_tokens, args.threads)
        llama = run_llama(args.llama_python, model_path, path, args.max_tokens, args.threads, len(texts))
        if llama is not None:
            figures["llama_cpp_loop"] = llama
    for entry in figures.values():
        entry["prompts_per_s"] = entry["prompts"] / entry["seconds"]
        entry["tok_s"] = entry["completion_tokens"] / entry["seconds"]
    base = figures["batch"]["prompts_per_s"]
    report = {
        "model": model_path,
        "max_tokens": args.max_tokens,
        "figures": figures,
        "batch_over": {k: base / v["prompts_per_s"] for k, v in figures.items() if k != "batch"},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, entry in figures.items():
            print(f"{name:>15}: {entry['prompts']} prompts in {entry['seconds']:.1f} s, "
                  f"{entry['prompts_per_s']:.2f} prompts/s, {entry['tok_s']:.1f} tok/s")  # fmt: skip
        for name, ratio in report["batch_over"].items():
            print(f"--batch is {ratio:.1f}x {name}")
    return report


if __name__ == "__main__":
    main()
