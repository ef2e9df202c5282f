"""The K and IQ types through `mistral quantize`: a tiny random Llama (made with transformers, written as a float32
GGUF as llama.cpp's converter writes it) quantized to each type loads back with logits near the float model's;
the per-tensor policy of every mix is llama.cpp's; and where llama-cpp-python is installed, llama.cpp's own
llama_model_quantize writes the same bytes, and loads and runs what we write."""

import json
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader
from llama_cpp_peer import LLAMA_FILE_TYPES, llama_chat, llama_quantize
from paged import OneSequence
from tiny_models import hf_logits, make_hf_model, write_gguf

pytestmark = pytest.mark.slow
Q = GGMLQuantizationType
QUANTIZE = [sys.executable, "-m", "mistralcli", "quantize"]
# 8 layers so that the mixes' layer rules (the first and last eighth, every third between) pick different
# layers; one KV head for 4 query heads (GQA 4, which some rules read); 256 columns, so the K types apply.
SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=1)
TOKENS = [1, 200, 45, 82, 46, 14, 42, 30, 254, 17, 201, 45, 9, 112]


def byte_level_vocabulary() -> dict:
    """A small GGUF vocabulary (the 256 byte symbols, two merges, ChatML's control tokens): the tiny model's
    embedding stays small, so quantizing it to every type is quick."""
    from tokenizers import pre_tokenizers

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*symbols, "Ġt", "he", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [1] * (len(symbols) + 2) + [3, 3, 3],
        "tokenizer.ggml.merges": ["Ġ t", "h e"],
        "tokenizer.ggml.bos_token_id": len(tokens) - 2,
        "tokenizer.ggml.eos_token_id": len(tokens) - 1,
        "tokenizer.chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}",
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(transformers model, its float32 GGUF) with a byte-level vocabulary."""
    vocab = byte_level_vocabulary()
    hf = make_hf_model("llama", vocab_size=len(vocab["tokenizer.ggml.tokens"]), initializer_range=0.05, **SHAPE)
    path = tmp_path_factory.mktemp("tiny") / "tiny-f32.gguf"
    write_gguf(path, hf, vocab)
    return hf, path


def types_of(path) -> dict[str, str]:
    return {t.name: Q(t.tensor_type).name for t in GGUFReader(path).tensors}


def ours(source, mix: str, out, pure=False):
    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.quantize import gguf_file, policy

    reader = open_gguf(source)
    options = policy.Options(pure=pure)
    plans = gguf_file.plan(reader, policy.mix_named(mix), options)
    if out is not None:
        gguf_file.write(reader, plans, policy.mix_named(mix), out)
    return {p.name: p.target.name for p in plans}


# Relative RMSE of each type's round trip on Gaussian weights (tests/test_kquants.py measures it). A random
# 8-layer network amplifies the noise of its weights: the RMS error of its logits, over their standard deviation,
# came out 3.3 to 4.6 times the weights' error for every type here (the gain; Q2_K's the least, where it
# saturates). The bound: 6 times the weights' error.
WEIGHT_ERROR = {"Q2_K": 0.30, "Q3_K": 0.16, "Q4_K": 0.075, "Q5_K": 0.038, "Q6_K": 0.019, "IQ4_NL": 0.08, "IQ4_XS": 0.08}


@pytest.mark.parametrize("qtype", list(WEIGHT_ERROR))
def test_each_type_loads_back_near_the_float_model(tiny, tmp_path, qtype):
    from mistralcli.loading.loader import load_model

    hf, source = tiny
    out = tmp_path / f"tiny-{qtype}.gguf"
    assert set(ours(source, qtype, out, pure=True).values()) == {qtype, "F32"}
    assert set(types_of(out).values()) == {qtype, "F32"}
    expected = hf_logits(hf, TOKENS)
    model = load_model(str(out)).model
    got = OneSequence(model, capacity=64, block_size=4).forward(
        np.array(TOKENS), np.arange(len(TOKENS)), all_logits=True
    )
    error = np.sqrt(np.mean((got - expected) ** 2)) / expected.std()
    assert error < 6 * WEIGHT_ERROR[qtype], f"{qtype}: logits off by {error:.3f} of their spread"


def test_the_mixes_raise_what_llama_cpp_raises(tiny):
    plan = ours(tiny[1], "Q4_K_M", None)
    assert plan["output.weight"] == "Q6_K" and plan["token_embd.weight"] == "Q4_K"
    # Q4_K_M: attn_v and ffn_down at Q6_K in the first and last eighth of the 8 layers and every third between
    raised = [i for i in range(8) if plan[f"blk.{i}.ffn_down.weight"] == "Q6_K"]
    assert raised == [0, 3, 6, 7] and [i for i in range(8) if plan[f"blk.{i}.attn_v.weight"] == "Q6_K"] == raised
    assert plan["blk.1.attn_q.weight"] == "Q4_K" and plan["blk.0.attn_norm.weight"] == "F32"
    q3 = ours(tiny[1], "Q3_K_M", None)
    assert [q3[f"blk.{i}.attn_v.weight"] for i in range(3)] == ["Q5_K", "Q5_K", "Q4_K"]
    assert q3["blk.0.attn_output.weight"] == "Q4_K" and q3["blk.5.attn_k.weight"] == "Q3_K"
    assert ours(tiny[1], "Q4_K", None) == plan  # llama-quantize's alias


def test_a_dry_run_lists_the_types_and_the_help_has_them(tiny):
    listed = subprocess.run([*QUANTIZE, "--list-types", "--json"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    names = [row["type"] for row in json.loads(listed.stdout)["types"]]
    assert {"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_S", "Q6_K", "IQ4_NL", "IQ4_XS", "Q8_0", "BF16"} <= set(names)
    dry = subprocess.run(
        [*QUANTIZE, "-m", str(tiny[1]), "--type", "Q4_K_M", "--dry-run", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    rows = {row["name"]: row for row in json.loads(dry.stdout)["tensors"]}
    assert rows["blk.0.ffn_down.weight"]["to"] == "Q6_K" and rows["blk.0.ffn_down.weight"]["why"] == "Q4_K_M rule"


# --- against llama.cpp (skipped where llama-cpp-python is not installed) -----------------------------------


@pytest.mark.parametrize("mix", list(LLAMA_FILE_TYPES))
def test_every_tensor_gets_the_type_llama_cpp_gives_it(tiny, tmp_path, mix):
    out = tmp_path / f"llama-{mix}.gguf"
    llama_quantize(tiny[1], out, mix)
    assert ours(tiny[1], mix, None) == types_of(out)


def test_the_file_is_llama_cpps_byte_for_byte(tiny, tmp_path):
    """The same source, the same mix: every tensor's bytes as llama.cpp's quantizer writes them."""
    theirs, mine = tmp_path / "llama.gguf", tmp_path / "ours.gguf"
    llama_quantize(tiny[1], theirs, "Q4_K_M")
    ours(tiny[1], "Q4_K_M", mine)
    expected = {t.name: np.asarray(t.data) for t in GGUFReader(theirs).tensors}
    for tensor in GGUFReader(mine).tensors:
        assert np.array_equal(np.asarray(tensor.data).view(np.uint8), expected[tensor.name].view(np.uint8)), tensor.name


@pytest.mark.parametrize("mix", ["Q4_K_M", "Q3_K_M", "IQ4_XS"])
def test_smollm2_mixes_with_their_fallbacks_are_llama_cpps(smollm2_path, tmp_path, mix):
    """SmolLM2's 576 columns do not divide into 256: the fallbacks (Q4_K to Q5_0, Q6_K to Q8_0, ...) as llama.cpp's."""
    out = tmp_path / f"llama-{mix}.gguf"
    llama_quantize(smollm2_path, out, mix)
    assert ours(smollm2_path, mix, None) == types_of(out)


def test_smollm2_q4_k_m_loads_and_answers_in_ours_and_in_llama_cpp(smollm2_path, tmp_path):
    """Our Q4_K_M is llama.cpp's Q4_K_M of the same source, byte for byte, so both engines answer from it what
    they answer from llama.cpp's. (SmolLM2-135M at Q4_K_M, quantized again from its Q4_1, answers "L'Étoile (The
    City of Light) is the capital of France" in ours and llama.cpp's "L'Étoile (The Lion) is the capital of
    France": the small model's, from either quantizer. llama.cpp's own greedy answer from the Q4_1 file itself
    is "L'Étoile, la Cité, ...". Our Q8_0 answers Paris: tests/test_quantize_command.py.)"""
    from mistralcli import LLM, SamplingParams

    question = "What is the capital of France?"
    out = tmp_path / "smollm2-Q4_K_M.gguf"
    result = subprocess.run(
        [*QUANTIZE, "-m", str(smollm2_path), "--type", "Q4_K_M", "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tensors"]["Q6_K"] > 0
    greedy = SamplingParams(temperature=0, max_tokens=16)
    mine = LLM(str(out)).chat([{"role": "user", "content": question}], greedy)[0].outputs[0].text
    assert "capital of France" in mine
    theirs = tmp_path / "llama-Q4_K_M.gguf"
    llama_quantize(smollm2_path, theirs, "Q4_K_M")
    expected = {t.name: np.asarray(t.data).view(np.uint8) for t in GGUFReader(theirs).tensors}
    for tensor in GGUFReader(out).tensors:
        assert np.array_equal(np.asarray(tensor.data).view(np.uint8), expected[tensor.name]), tensor.name
    assert "capital of France" in llama_chat(out, question)
