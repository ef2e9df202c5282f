"""Perplexity as llama.cpp computes it (windows of ctx tokens, the second half of each scored), checked against
the same computation over transformers' float32 logits on a tiny random Llama, and `mistral perplexity` on
SmolLM2: its figures and its errors."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mistralcli.errors import MistralError

pytestmark = pytest.mark.slow
TEXT = "".join(chr(32 + (i * 7919) % 95) for i in range(700))  # 700 printable bytes: 700 byte-level tokens


def reference_perplexity(model, ids: list[int], ctx: int) -> float:
    import torch

    first, nll, count = ctx // 2, 0.0, 0
    for w in range(len(ids) // ctx):
        window = torch.tensor([ids[w * ctx : (w + 1) * ctx]])
        with torch.no_grad():
            logits = model(window).logits[0].double()
        logp = torch.log_softmax(logits[first : ctx - 1], dim=-1)
        nll -= float(logp[torch.arange(ctx - 1 - first), window[0, first + 1 :]].sum())
        count += ctx - 1 - first
    return math.exp(nll / count)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import QWEN3_CHAT_TEMPLATE, make_hf_model, save_byte_level_tokenizer

    from mistralcli.loading.loader import load_model

    directory = tmp_path_factory.mktemp("tiny-llama")
    model = make_hf_model("llama")
    model.save_pretrained(directory)
    save_byte_level_tokenizer(directory, QWEN3_CHAT_TEMPLATE)
    return model, load_model(str(directory))


@pytest.mark.parametrize("ctx", [64, 128])
def test_agrees_with_transformers(tiny, ctx):
    from mistralcli.quantize.perplexity import perplexity

    model, loaded = tiny
    ids = loaded.tokenizer.encode(TEXT, add_special=True, parse_special=False)
    assert len(ids) == 700 and not loaded.tokenizer.add_bos
    result = perplexity(loaded, TEXT, ctx)
    expected = reference_perplexity(model, ids, ctx)
    assert result.windows == 700 // ctx and result.tokens_scored == result.windows * (ctx - 1 - ctx // 2)
    assert result.ppl == pytest.approx(expected, rel=1e-4)
    assert 0 < result.error < result.ppl and len(result.per_window) == result.windows
    assert result.per_window[-1] == pytest.approx(result.ppl)


def test_too_short_a_text_or_too_long_a_window(tiny):
    from mistralcli.quantize.perplexity import perplexity

    _, loaded = tiny
    with pytest.raises(MistralError, match="the text is 100 tokens; perplexity with --ctx 64 needs at least 128"):
        perplexity(loaded, TEXT[:100], 64)
    with pytest.raises(MistralError, match=r"--ctx 512: more than tiny-llama\d*'s context \(256 tokens\)"):
        perplexity(loaded, TEXT * 10, 512)


def test_the_command_on_smollm2(tmp_path, smollm2_path):
    words = "the of and to in is was that for on as with by at from his her they which this be are or an".split()
    rng = np.random.default_rng(0)
    text = tmp_path / "text.txt"
    text.write_text(" ".join(rng.choice(words, 1500)))
    run = [sys.executable, "-m", "mistralcli", "perplexity", "-m", str(smollm2_path), "-f", str(text)]
    result = subprocess.run([*run, "--ctx", "128", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["windows"] >= 2 and body["tokens_scored"] == body["windows"] * 63
    assert 1 < body["ppl"] < 500  # words at random: far from 1, far below the 49152-token vocabulary
    short = subprocess.run([*run, "--ctx", "8192"], capture_output=True, text=True, timeout=300)
    assert short.returncode == 2 and "needs at least 16384" in short.stderr and "Traceback" not in short.stderr
    missing = subprocess.run([*run[:-2], "-f", str(tmp_path / "none.txt")], capture_output=True, text=True)
    flat = " ".join(line.strip("│╭╮╰╯─ ") for line in missing.stderr.splitlines())
    assert missing.returncode == 2 and "cannot read it as UTF-8 text" in flat
