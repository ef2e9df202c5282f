"""In-situ quantization (--isq, LLM(isq=)): a safetensors model quantized while it loads holds the bytes of the
GGUF file mistral quantize writes from it, tensor for tensor; its peak memory is the quantized model plus about
one tensor in float32; it answers from the command line; bad values are usage errors."""

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from tiny_models import QWEN3_CHAT_TEMPLATE, make_hf_model, permute_for_gguf, save_byte_level_tokenizer

from mistralcli.errors import MistralError

pytestmark = pytest.mark.slow
MISTRAL = [sys.executable, "-m", "mistralcli"]
SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-hf")
    make_hf_model("llama", vocab_size=2048, initializer_range=0.05, **SHAPE).save_pretrained(directory)
    save_byte_level_tokenizer(directory, QWEN3_CHAT_TEMPLATE)
    return directory


@pytest.mark.parametrize("mix", ["Q4_K_M", "Q8_0", "IQ4_XS"])
def test_isq_is_the_file_mistral_quantize_writes(tiny_dir, tmp_path, mix):
    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.loading.loader import load_model
    from mistralcli.quantize import gguf_file, policy
    from mistralcli.quantize.hf_source import open_hf

    source = open_hf(tiny_dir)
    plans = gguf_file.plan(source, policy.mix_named(mix))
    out = tmp_path / f"{mix}.gguf"
    gguf_file.write(source, plans, policy.mix_named(mix), out)
    in_situ = load_model(str(tiny_dir), isq=mix).model.weights
    written = open_gguf(out).tensors
    for p in plans:
        if len(p.shape) < 2:
            continue
        mine = np.asarray(in_situ[p.name].data)
        assert in_situ[p.name].ggml_type == p.target, p.name
        if p.name.endswith(("attn_q.weight", "attn_k.weight")):  # the file's rows permuted for its rope
            heads = SHAPE["num_attention_heads"] if "attn_q" in p.name else SHAPE["num_key_value_heads"]
            mine = mine[permute_for_gguf(np.arange(mine.shape[0])[:, None], heads)[:, 0]]
        assert np.array_equal(mine.view(np.uint8), np.asarray(written[p.name].data).view(np.uint8)), p.name


def test_isq_holds_one_tensor_in_float32_at_a_time(tiny_dir):
    from mistralcli.loading.loader import load_model
    from mistralcli.loading.safetensors_dir import tensor_list

    listed = tensor_list(tiny_dir)
    float32_model = sum(int(np.prod(shape)) * 4 for _, shape, _, _, _ in listed)
    largest = max(int(np.prod(shape)) * 4 for _, shape, _, _, _ in listed)
    tracemalloc.start()
    try:
        loaded = load_model(str(tiny_dir), isq="Q4_K_M")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    quantized = sum(np.asarray(w.data).nbytes for w in loaded.model.weights.values())
    # the stored float32 tensors (read one at a time), the quantized ones, and the largest one's float32 copy,
    # its float16... : a few times one tensor, not the model
    assert peak < quantized + 4 * largest, (peak, quantized, largest)
    assert peak < 0.6 * float32_model, (peak, float32_model)


def test_isq_from_the_command_line(smollm2_hf):
    done = subprocess.run(
        [*MISTRAL, "run", "-m", str(smollm2_hf), "--isq", "Q8_0", "What is the capital of France?"]
        + ["--temperature", "0", "--max-tokens", "12"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


@pytest.mark.parametrize("command", [["run", "hello"], ["serve"], ["chat"]])
def test_a_bad_isq_type_is_a_usage_error(command):
    done = subprocess.run([*MISTRAL, *command, "--isq", "Q9_K"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--isq 'Q9_K': not a type this quantizes to" in " ".join(
        line.strip("│╭╮╰╯─ ") for line in done.stderr.splitlines()
    )


def test_llm_takes_isq(smollm2_path):
    from mistralcli import LLM

    with pytest.raises(MistralError, match="not a type this quantizes to"):
        LLM(str(smollm2_path), isq="Q9")
    llm = LLM(str(smollm2_path), isq="Q8_0")  # a GGUF source too: dequantized and quantized again as it loads
    assert {w.ggml_type.name for w in llm.loaded.model.weights.values() if len(w.shape) > 1} == {"Q8_0"}
