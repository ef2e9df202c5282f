"""`mistral quantize` on a GGUF source: the plan per tensor (llama.cpp's policy), the file written with the gguf
package's writer and loaded back by ours (and by llama.cpp where llama-cpp-python is installed), the metadata
carried over, and every bad input a clear error that leaves no file behind."""

import json
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType

from mistralcli.errors import MistralError

pytestmark = pytest.mark.slow
Q = GGMLQuantizationType
QUANTIZE = [sys.executable, "-m", "mistralcli", "quantize"]


def quantize(*args):
    return subprocess.run([*QUANTIZE, *args], capture_output=True, text=True, timeout=600)


def flat(text: str) -> str:
    """A usage error's text without its panel's borders and line breaks (a long path wraps it)."""
    return " ".join(text.replace("│", " ").split())


def types_of(path) -> dict[str, str]:
    return {t.name: Q(t.tensor_type).name for t in GGUFReader(path).tensors}


def test_requantized_to_q8_0_loads_and_answers(tmp_path, smollm2_path):
    out = tmp_path / "smollm2-q8_0.gguf"
    result = quantize("-m", str(smollm2_path), "--type", "Q8_0", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert "already quantized" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["tensors"] == {"F32": 61, "Q8_0": 211} and 8.4 < summary["bits_per_weight"] < 8.6
    assert summary["bytes_after"] < out.stat().st_size < summary["bytes_after"] + 4_000_000  # + metadata
    source, written = GGUFReader(smollm2_path), GGUFReader(out)
    for key in ("tokenizer.ggml.tokens", "tokenizer.chat_template", "llama.context_length", "general.name"):
        assert written.fields[key].contents() == source.fields[key].contents()
    assert written.fields["general.file_type"].contents() == LlamaFileType.MOSTLY_Q8_0
    assert [t.name for t in written.tensors] == [t.name for t in source.tensors]

    from mistralcli import LLM, SamplingParams

    greedy = SamplingParams(temperature=0, max_tokens=12)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = LLM(str(out)).chat(question, greedy)[0].outputs[0].text
    assert "Paris" in answer
    # Q8_0 of the Q4_1 model's weights is that model again, nearly: the same greedy answer
    assert answer == LLM(str(smollm2_path)).chat(question, greedy)[0].outputs[0].text


def test_the_plan_keeps_vectors_and_the_embedding_and_takes_overrides(tmp_path, smollm2_path):
    result = quantize(
        "-m", str(smollm2_path), "--type", "Q4_0", "--dry-run", "--json", "--tensor-type", r"ffn_down=Q5_1"
    )
    assert result.returncode == 0, result.stderr
    plan = {row["name"]: row for row in json.loads(result.stdout)["tensors"]}
    # tied to the output: raised to Q6_K, whose blocks of 256 do not divide SmolLM2's 576 columns: Q8_0
    assert plan["token_embd.weight"]["to"] == "Q8_0" and "Q6_K, but rows of 576" in plan["token_embd.weight"]["why"]
    assert plan["blk.0.attn_norm.weight"]["to"] == "F32"
    assert plan["blk.3.ffn_down.weight"]["to"] == "Q5_1" and plan["blk.3.ffn_up.weight"]["to"] == "Q4_0"
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--type", "Q7_K"], "--type 'Q7_K': not a type this quantizes to"),
        (["--type", "Q8_0", "--output-tensor-type", "Q9"], "--output-tensor-type 'Q9': not a tensor type"),
        (["--type", "Q8_0", "--tensor-type", "ffn_down"], "write it REGEX=TYPE"),
        (["--type", "Q8_0", "--tensor-type", "(=Q4_0"], "not a regular expression"),
        (["--type", "Q8_0"], "where to write it?"),
    ],
)
def test_bad_flags_are_usage_errors(smollm2_path, args, needle):
    result = quantize("-m", str(smollm2_path), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert needle in " ".join(line.strip("│╭╮╰╯─ ") for line in result.stderr.splitlines())


def test_an_existing_output_is_kept_and_a_broken_source_named(tmp_path, smollm2_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"mine")
    refused = quantize("-m", str(smollm2_path), "--type", "Q8_0", "-o", str(out))
    assert refused.returncode == 2 and "exists (--force replaces it)" in flat(refused.stderr)
    assert out.read_bytes() == b"mine"
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 10)
    broken = quantize("-m", str(junk), "--type", "Q8_0", "-o", str(tmp_path / "new.gguf"))
    assert broken.returncode == 1 and f"{junk}: not a GGUF file" in broken.stderr
    assert "Traceback" not in broken.stderr and not (tmp_path / "new.gguf").exists()


def test_a_failed_write_leaves_no_file(tmp_path, smollm2_path):
    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.quantize import gguf_file, policy

    reader = open_gguf(smollm2_path)
    plans = gguf_file.plan(reader, policy.MIXES["Q8_0"])
    done = []

    def disk_full(plan):
        done.append(plan)
        if len(done) == 5:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        gguf_file.write(reader, plans, policy.MIXES["Q8_0"], tmp_path / "out.gguf", disk_full)
    assert not list(tmp_path.iterdir())
    with pytest.raises(MistralError, match="not a type this quantizes to"):
        policy.mix_named("IQ2_XXS")
    assert np.prod(plans[0].shape) > 0


def test_eval_prints_both_perplexities(tmp_path, smollm2_path):
    words = "the of and to in is was that for on as with by at from his her they which this be are or an".split()
    text = tmp_path / "text.txt"
    text.write_text(" ".join(np.random.default_rng(0).choice(words, 800)))
    out = tmp_path / "q4_0.gguf"
    result = quantize(
        "-m", str(smollm2_path), "--type", "Q4_0", "-o", str(out), "--eval", str(text), "--eval-ctx", "128", "--json"
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)["perplexity"]
    assert "perplexity (--eval-ctx 128): source" in result.stderr
    # Q4_0 of the Q4_1 model's weights: a little worse than the source, not lost
    assert figures["source"] * 0.98 < figures["result"] < figures["source"] * 1.5


def test_dense_sources_are_read_as_they_are(tmp_path):
    from gguf import GGUFWriter

    from mistralcli.quantize import gguf_file
    from mistralcli.quantize.blocks import quantize as ours

    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    path = tmp_path / "dense.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_tensor("f32", x)
    writer.add_tensor("f16", x.astype(np.float16))
    bf16_bytes = ours(x, Q.BF16)
    writer.add_tensor("bf16", bf16_bytes, raw_shape=bf16_bytes.shape, raw_dtype=Q.BF16)  # the shape in bytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from mistralcli.loading.gguf_file import open_gguf

    tensors = open_gguf(path).tensors
    assert np.array_equal(gguf_file._float(tensors["f32"]), x)
    assert np.array_equal(gguf_file._float(tensors["f16"]), x.astype(np.float16).astype(np.float32))
    bf16 = gguf_file._float(tensors["bf16"])
    assert bf16.shape == x.shape and np.abs(bf16 - x).max() <= np.abs(x).max() / 128
