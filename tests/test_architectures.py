"""Qwen2, Qwen3, Gemma 3, Mistral with a sliding window, Mixtral, Qwen2-MoE, Qwen3-MoE and Phi-3 against transformers
on tiny random configs: logits within 1e-4 in float32 for a prompt in one go, and for decode steps through the paged
cache (the engine's path: prompt chunks through forward, each next token through the fused C step), and batched
greedy decoding equal to decoding alone. GGUF files of Mixtral and Qwen3 load as llama.cpp writes them."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from paged import OneSequence
from tiny_models import hf_logits, saved_checkpoint

from mistralcli.engine.block_manager import BlockManager
from mistralcli.engine.model_runner import ModelRunner
from mistralcli.engine.paged_cache import PagedKVCache
from mistralcli.loading import safetensors_dir
from mistralcli.models import HF_MODEL_TYPES, get_architecture
from mistralcli.models.moe import MoEModel
from mistralcli.ops import get_ops

TOLERANCE = 1e-4
GEMMA = dict(
    num_hidden_layers=7,
    num_key_value_heads=1,
    head_dim=32,
    sliding_window=4,
    query_pre_attn_scalar=24,
    tie_word_embeddings=True,
)
CONFIGS = {
    "qwen2-tied": ("qwen2", dict(tie_word_embeddings=True)),
    "qwen2-untied": ("qwen2", dict(num_key_value_heads=1)),
    "qwen2-window": ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "mistral-window": ("mistral", dict(sliding_window=4)),
    "gemma3": ("gemma3", GEMMA),
    "gemma3-mha": (
        "gemma3",
        dict(
            GEMMA,
            num_key_value_heads=4,
            head_dim=16,
            sliding_window=6,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                "full_attention": {"rope_type": "default", "rope_theta": 5e4},
            },
        ),
    ),
}
MOE = dict(num_experts_per_tok=2, router_jitter_noise=0.0)
CONFIGS |= {
    "mixtral": ("mixtral", dict(MOE, num_local_experts=4, sliding_window=None)),
    "mixtral-window": ("mixtral", dict(MOE, num_local_experts=3, num_experts_per_tok=1, sliding_window=5)),
    "qwen2-moe": (
        "qwen2_moe",
        dict(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=48,
            shared_expert_intermediate_size=80,
            num_hidden_layers=3,
            mlp_only_layers=[1],
        ),
    ),
    "qwen2-moe-normalized": (
        "qwen2_moe",
        dict(
            num_experts=6,
            num_experts_per_tok=3,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=64,
            norm_topk_prob=True,
        ),
    ),
}
CONFIGS |= {
    "phi3": ("phi3", dict(pad_token_id=0, eos_token_id=1, bos_token_id=2)),
    "phi3-window": (
        "phi3",
        dict(pad_token_id=0, eos_token_id=1, bos_token_id=2, sliding_window=5, num_key_value_heads=4),
    ),
}
QWEN3 = dict(head_dim=32)  # not hidden / heads (16), as in the real models
QWEN3_MOE = dict(QWEN3, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48)
CONFIGS |= {
    "qwen3": ("qwen3", QWEN3),
    "qwen3-tied-window-bias": (
        "qwen3",
        dict(
            head_dim=8,
            tie_word_embeddings=True,
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=1,
            attention_bias=True,
        ),
    ),
    "qwen3-moe": ("qwen3_moe", dict(QWEN3_MOE, num_hidden_layers=3, mlp_only_layers=[1])),
    "qwen3-moe-normalized-window": (
        "qwen3_moe",
        dict(
            QWEN3_MOE,
            num_experts=6,
            num_experts_per_tok=3,
            moe_intermediate_size=32,
            norm_topk_prob=True,
            decoder_sparse_step=2,
            use_sliding_window=True,
            sliding_window=5,
        ),
    ),
}
TOKENS = np.array([5, 17, 300, 2, 99, 99, 451, 0, 12, 200, 7, 64, 3, 3, 480, 31])


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoint(request, tmp_path_factory):
    return saved_checkpoint(request.param, CONFIGS, tmp_path_factory)


def ours(directory, backend):
    """Our model from the checkpoint directory, as the loader builds it (no tokenizer here)."""
    config = safetensors_dir.read_config(directory)
    cls = get_architecture(HF_MODEL_TYPES[config["model_type"]])
    return cls(
        cls.args_class.from_dict(config), safetensors_dir.load_weights(directory, cls.hf_names), get_ops(backend)
    )


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_prefill_logits_match_transformers(checkpoint, backend):
    hf, directory = checkpoint
    model = ours(directory, backend)
    expected = hf_logits(hf, TOKENS)
    got = OneSequence(model, block_size=4).forward(TOKENS, np.arange(len(TOKENS)), all_logits=True)
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_the_window_matters(checkpoint):
    """The sliding window changes these logits: without it they would differ."""
    hf, directory = checkpoint
    model = ours(directory, "reference")
    if not any(layer["window"] for layer in model.layers):
        pytest.skip("no sliding window in this config")
    for layer in model.layers:
        layer["window"] = 0
    got = OneSequence(model, block_size=4).forward(TOKENS, np.arange(len(TOKENS)), all_logits=True)
    assert np.abs(got - hf_logits(hf, TOKENS)).max() > 100 * TOLERANCE


def test_paged_prefill_and_fused_decode_match_transformers(checkpoint):
    hf, directory = checkpoint
    model = ours(directory, "cpu")
    a = model.args
    cache = PagedKVCache(
        a.num_hidden_layers, num_blocks=12, block_size=4, num_kv_heads=a.num_key_value_heads, head_dim=a.head_dim
    )
    runner = ModelRunner(model, cache, BlockManager(12, 4))
    table = [7, 2, 9, 0, 5, 11]  # out of order, as the block manager hands them out
    expected = hf_logits(hf, TOKENS)
    split = 6
    rows = list(runner.forward(TOKENS[:3], np.arange(3), table, all_logits=True))
    rows += list(runner.forward(TOKENS[3:split], np.arange(3, split), table, all_logits=True))  # a second chunk
    for pos in range(split, len(TOKENS)):  # the decode step (through forward for experts, as the engine does)
        rows.append(runner.decode([TOKENS[pos]], [pos], [table])[0])
    assert (runner.decode_step is None) == isinstance(model, MoEModel)
    np.testing.assert_allclose(np.stack(rows), expected, rtol=0, atol=TOLERANCE)


class _Ids:
    """The engine's view of a tokenizer, for a model without one: no end-of-generation token."""

    eog_token_ids = ()

    def __init__(self, vocab_size):
        self.vocab_size = vocab_size
        self.token_bytes = [bytes([i % 94 + 33]) for i in range(vocab_size)]

    def decode_bytes(self, ids, skip_special=True):
        return b"".join(self.token_bytes[i] for i in ids)


def test_batched_greedy_equals_alone(checkpoint):
    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.sampling import SamplingParams

    _, directory = checkpoint
    model = ours(directory, "cpu")
    params = SamplingParams(temperature=0, max_tokens=14)
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, 512, size=int(n))) for n in rng.integers(2, 12, size=7)]

    def run(requests):
        eng = Engine(model, _Ids(512), 256, EngineConfig(max_num_seqs=8, block_size=4, kv_cache_mb=4))
        for i, ids in requests:
            eng.add_request(str(i), ids, params)
        out = {}
        while eng.has_unfinished():
            for o in eng.step():
                out.setdefault(o.request_id, []).extend(o.new_token_ids)
        return out

    together = run(list(enumerate(prompts)))
    for i, ids in enumerate(prompts):
        assert run([(i, ids)])[str(i)] == together[str(i)]
    assert all(len(t) == 14 for t in together.values())


@pytest.mark.parametrize("backend, tolerance", [("reference", 1e-4), ("cpu", 1e-3)])
def test_mixtral_gguf_with_quantized_experts(tmp_path, smollm2_path, backend, tolerance):
    """A Mixtral GGUF as llama.cpp writes it (llama + expert count, stacked Q8_0 experts) loads as Mixtral
    and agrees with transformers holding the same Q8_0-rounded experts, prompt and decode: to 1e-4
    in float (the reference), to 1e-3 through the CPU's block products, whose activations are rounded
    to int16 per block of 32."""
    from gguf import GGMLQuantizationType
    from tiny_models import make_hf_model, requantize_experts, write_gguf

    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.loading.loader import load_model

    vocab = open_gguf(smollm2_path).metadata
    hf = make_hf_model(
        "mixtral",
        vocab_size=len(vocab["tokenizer.ggml.tokens"]),
        hidden_size=64,
        intermediate_size=64,
        num_local_experts=4,
        num_experts_per_tok=2,
        router_jitter_noise=0.0,
    )
    path = tmp_path / "tiny-mixtral.gguf"
    write_gguf(path, hf, vocab, expert_type=GGMLQuantizationType.Q8_0)
    requantize_experts(hf, GGMLQuantizationType.Q8_0)
    loaded = load_model(str(path), backend=backend)
    model = loaded.model
    assert type(model).__name__ == "MixtralModel" and model.args.num_experts == 4
    assert model.layers[0]["experts"][0][0].ggml_type == GGMLQuantizationType.Q8_0
    ids = np.array(loaded.tokenizer.encode("The capital of France is Paris, and the capital of Italy is"))
    cache = OneSequence(model, block_size=4)
    expected = hf_logits(hf, ids)
    rows = list(cache.forward(ids[:-3], np.arange(len(ids) - 3), all_logits=True))
    rows += [cache.forward(ids[p : p + 1], np.array([p]))[-1] for p in range(len(ids) - 3, len(ids))]
    np.testing.assert_allclose(np.stack(rows), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize(
    "kind, arch, overrides",
    [("qwen3", "qwen3", QWEN3), ("qwen3_moe", "qwen3moe", dict(QWEN3_MOE, norm_topk_prob=True))],
)
def test_qwen3_gguf(tmp_path, smollm2_path, kind, arch, overrides):
    """A Qwen3 / Qwen3-MoE GGUF as llama.cpp writes it (q/k rows unpermuted, `attn_q_norm`, head_dim in
    `attention.key_length`, stacked experts, top-k always renormalized) agrees with transformers, prompt
    and decode, through the loader."""
    from tiny_models import make_hf_model, write_gguf

    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.loading.loader import load_model

    vocab = open_gguf(smollm2_path).metadata
    hf = make_hf_model(kind, vocab_size=len(vocab["tokenizer.ggml.tokens"]), **overrides)
    path = tmp_path / f"tiny-{arch}.gguf"
    write_gguf(path, hf, vocab, arch=arch)
    loaded = load_model(str(path), backend="cpu")
    model = loaded.model
    assert type(model) is get_architecture(arch) and model.args.head_dim == 32
    assert model.layers[0]["attn_q_norm"].shape == (32,) and model.layers[0]["attn_q_bias"] is None
    ids = np.array(loaded.tokenizer.encode("The capital of France is Paris, and the capital of Italy is"))
    cache = OneSequence(model, block_size=4)
    rows = list(cache.forward(ids[:-3], np.arange(len(ids) - 3), all_logits=True))
    rows += [cache.forward(ids[p : p + 1], np.array([p]))[-1] for p in range(len(ids) - 3, len(ids))]
    np.testing.assert_allclose(np.stack(rows), hf_logits(hf, ids), rtol=0, atol=TOLERANCE)


def test_qwen3_directory_with_its_thinking_template(tmp_path):
    """A Qwen3 model directory with Qwen3's own chat template renders both sides of its thinking switch
    as transformers does (thinking off: an empty `<think>\\n\\n</think>\\n\\n` closes the prompt; the tags
    are one token each), and its template calls for the `think` reasoning parser."""
    from tiny_models import QWEN3_CHAT_TEMPLATE, make_hf_model, save_byte_level_tokenizer

    from mistralcli.loading.loader import load_model
    from mistralcli.prompt import chat_prompt_ids, render_chat
    from mistralcli.reasoning import prompt_ends_in_thought, reasoning_parser_for_template

    make_hf_model("qwen3", **QWEN3).save_pretrained(tmp_path)
    hf_tokenizer = save_byte_level_tokenizer(tmp_path, QWEN3_CHAT_TEMPLATE)
    loaded = load_model(str(tmp_path))
    assert type(loaded.model).__name__ == "Qwen3Model"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nEasy.\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    prompts, prompt_ids = {}, {}
    for enable_thinking in (False, True):
        kwargs = {"enable_thinking": enable_thinking}
        prompt = render_chat(loaded.chat_template, messages, template_kwargs=kwargs)
        assert prompt == hf_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
        )
        ids = chat_prompt_ids(loaded.tokenizer, loaded.chat_template, messages, template_kwargs=kwargs)
        assert ids == hf_tokenizer.encode(prompt, add_special_tokens=False)
        assert not prompt_ends_in_thought(prompt)
        prompts[enable_thinking], prompt_ids[enable_thinking] = prompt, ids
    assert prompts[False].endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert prompts[True].endswith("<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n")
    assert "Easy." not in prompts[True]  # the earlier turn's thought is dropped, as Qwen3 wants
    think_ids = hf_tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    assert [i for i in prompt_ids[False] if i in think_ids] == think_ids
    assert reasoning_parser_for_template(loaded.chat_template.source) == "think"
