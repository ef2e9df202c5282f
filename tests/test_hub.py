"""Getting and knowing models: `mistral pull REPO[:QUANT]` over a Hugging Face cache the tests lay out (no
network: offline, or a hub endpoint that does not answer), the quant chosen as llama.cpp's -hf chooses it,
`run -m REPO:QUANT`, `mistral models` (and `list`, `models rm`) and `mistral show`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mistralcli.errors import MistralError
from mistralcli.loading.hub import HubSpec, choose, parse_spec, quant_of, quants

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo: str, files: dict[str, Path | bytes], commit: str = COMMIT) -> Path:
    """huggingface_hub's cache layout: blobs, a snapshot of links to them, refs/main. A Path's blob is a link to it
    (no copy of a model); bytes are written. Returns the snapshot."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    for number, (name, source) in enumerate(files.items()):
        blob = folder / "blobs" / f"{number:04x}{'b' * 36}"
        if isinstance(source, Path):
            blob.symlink_to(source)
        else:
            blob.write_bytes(source)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def cache(tmp_path, smollm2_path):
    root = tmp_path / "hub"
    hub_cache(
        root,
        "acme/tiny-GGUF",
        {
            "tiny-Q4_K_M.gguf": smollm2_path,
            "tiny-Q8_0.gguf": smollm2_path,
            "mmproj-tiny-f16.gguf": b"GGUF not a model",
            "README.md": b"# tiny\n",
        },
    )
    return root


def mistral(*args, cache_root: Path, tmp_path: Path, offline: bool = True, timeout: float = 120):
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "HF_HUB_CACHE": str(cache_root),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "MISTRALCLI_CACHE": str(tmp_path / "mcache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:  # online, but the hub does not answer: as on a machine without network
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"
        env["HF_HUB_ETAG_TIMEOUT"] = "2"
    return subprocess.run(
        [sys.executable, "-m", "mistralcli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


# ---- choosing files


def test_specs_parse_as_llama_cpp_reads_them():
    assert parse_spec("org/name") == HubSpec("org/name")
    assert parse_spec("org/name:q4_k_m") == HubSpec("org/name", "Q4_K_M")
    assert parse_spec("org/name/sub/file.gguf") == HubSpec("org/name", None, "sub/file.gguf")
    for local in ("./model.gguf", "/abs/model.gguf", "~/m.gguf", "model.gguf", "org/", "org/name/x.gguf:Q8_0"):
        assert parse_spec(local) is None, local


def test_quant_names_are_read_from_file_names():
    assert quant_of("SmolLM2-135M-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("model.IQ4_XS.gguf") == "IQ4_XS"
    assert quant_of("Qwen2.5-7B-Instruct-Q5_K_M-00001-of-00002.gguf") == "Q5_K_M"
    assert quant_of("model-bf16.gguf") == "BF16"
    assert quant_of("model.gguf") is None


def test_the_default_quant_the_named_one_shards_whole_and_what_is_missing():
    files = [
        "m-Q8_0.gguf",
        "m-Q4_K_M.gguf",
        "m-Q2_K.gguf",
        "mmproj-m-f16.gguf",
        "big/m-Q6_K-00001-of-00002.gguf",
        "big/m-Q6_K-00002-of-00002.gguf",
        "README.md",
    ]
    assert choose(files, HubSpec("o/m")) == ["m-Q4_K_M.gguf"]
    assert choose(files, HubSpec("o/m", "Q8_0")) == ["m-Q8_0.gguf"]
    assert choose(files, HubSpec("o/m", "Q6_K")) == ["big/m-Q6_K-00001-of-00002.gguf", "big/m-Q6_K-00002-of-00002.gguf"]
    assert choose(files, HubSpec("o/m"), pattern="*Q2_K*") == ["m-Q2_K.gguf"]
    assert quants(files) == ["Q2_K", "Q4_K_M", "Q6_K", "Q8_0"]  # not the projector's F16
    with pytest.raises(MistralError, match="no Q5_K_M GGUF; it has Q2_K, Q4_K_M, Q6_K, Q8_0"):
        choose(files, HubSpec("o/m", "Q5_K_M"))
    # without Q4_K_M and no quant named: the first GGUF, as llama.cpp's -hf takes
    assert choose(["b-Q8_0.gguf", "a-Q5_0.gguf"], HubSpec("o/m")) == ["a-Q5_0.gguf"]


def test_a_safetensors_repo_gives_its_model_files():
    files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md", "x.bin"]
    assert choose(files, HubSpec("o/m")) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    with pytest.raises(MistralError, match="no GGUF files, so no Q4_K_M"):
        choose(files, HubSpec("o/m", "Q4_K_M"))
    with pytest.raises(MistralError, match="no GGUF and no safetensors"):
        choose(["README.md"], HubSpec("o/m"))


# ---- pull, offline


def test_pull_offline_resolves_from_the_cache_and_picks_the_quant(cache, tmp_path):
    snapshot = cache / "models--acme--tiny-GGUF" / "snapshots" / COMMIT
    default = mistral("pull", "acme/tiny-GGUF", cache_root=cache, tmp_path=tmp_path)
    assert default.returncode == 0, default.stderr
    assert Path(default.stdout.strip()) == snapshot / "tiny-Q4_K_M.gguf"
    q8 = mistral("pull", "acme/tiny-GGUF:q8_0", "--json", cache_root=cache, tmp_path=tmp_path)
    body = json.loads(q8.stdout)
    assert Path(body["path"]) == snapshot / "tiny-Q8_0.gguf" and body["size_bytes"] > 50_000_000


def test_pull_offline_says_what_is_missing(cache, tmp_path):
    missing = mistral("pull", "acme/tiny-GGUF:Q5_K_M", cache_root=cache, tmp_path=tmp_path)
    assert missing.returncode == 1
    assert "no Q5_K_M GGUF; it has Q4_K_M, Q8_0 in the Hugging Face cache, and HF_HUB_OFFLINE is set" in missing.stderr
    absent = mistral("pull", "acme/absent-GGUF", cache_root=cache, tmp_path=tmp_path)
    assert absent.returncode == 1
    assert "acme/absent-GGUF is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in absent.stderr
    bad = mistral("pull", "./not-a-repo", cache_root=cache, tmp_path=tmp_path)
    assert bad.returncode == 2 and "'./not-a-repo' is not a Hugging Face repo id" in bad.stderr
    for result in (missing, absent, bad):
        assert "Traceback" not in result.stderr and not result.stdout


def test_a_hub_that_does_not_answer_falls_back_to_the_cache(cache, tmp_path):
    result = mistral("pull", "acme/tiny-GGUF:Q8_0", cache_root=cache, tmp_path=tmp_path, offline=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("tiny-Q8_0.gguf")
    absent = mistral("pull", "acme/absent-GGUF", cache_root=cache, tmp_path=tmp_path, offline=False)
    assert absent.returncode == 1 and "not in the Hugging Face cache and the hub could not be reached" in absent.stderr


def test_run_takes_repo_and_quant_and_pulls_on_first_use(cache, tmp_path):
    result = mistral(
        "run", "-m", "acme/tiny-GGUF:Q4_K_M", "What is the capital of France?", "--temperature", "0", "--json",
        cache_root=cache, tmp_path=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["model"] == "acme/tiny-GGUF:Q4_K_M" and "Paris" in body["text"]


# ---- models, rm, show


def test_models_lists_the_cache_with_size_quantization_and_context(cache, tmp_path):
    result = mistral("models", "--json", cache_root=cache, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    q4 = rows["acme/tiny-GGUF/tiny-Q4_K_M.gguf"]
    assert q4["source"] == "hub cache" and q4["architecture"] == "llama" and q4["context_length"] == 8192
    assert q4["quantization"] == "Q4_1" and set(q4["quantization_mix"]) == {"Q4_1", "Q8_0", "F32"}
    assert "acme/tiny-GGUF/mmproj-tiny-f16.gguf" not in rows  # a projector is no model
    table = mistral("list", cache_root=cache, tmp_path=tmp_path)
    assert table.stdout.splitlines()[0].split() == ["NAME", "SIZE", "ARCH", "QUANT", "MIX", "CONTEXT", "WHERE"]
    assert any(line.startswith("acme/tiny-GGUF/tiny-Q8_0.gguf") for line in table.stdout.splitlines())


def test_models_rm_removes_one_file_and_then_the_revision(cache, tmp_path, smollm2_path):
    name = "acme/tiny-GGUF/tiny-Q8_0.gguf"
    unasked = mistral("models", "rm", name, cache_root=cache, tmp_path=tmp_path)
    assert unasked.returncode == 2 and "--yes" in unasked.stderr
    unknown = mistral("models", "rm", "acme/nope", "--yes", cache_root=cache, tmp_path=tmp_path)
    assert unknown.returncode == 2 and "'acme/nope': no such model" in unknown.stderr
    gone = mistral("models", "rm", name, "--yes", cache_root=cache, tmp_path=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert f"removed {name}" in gone.stderr
    names = {row["name"] for row in json.loads(mistral("models", "--json", cache_root=cache, tmp_path=tmp_path).stdout)}
    assert name not in names and "acme/tiny-GGUF/tiny-Q4_K_M.gguf" in names
    assert smollm2_path.is_file()  # the blob was a link: the model it pointed to stays
    last = mistral("models", "rm", "acme/tiny-GGUF/tiny-Q4_K_M.gguf", "-y", cache_root=cache, tmp_path=tmp_path)
    assert last.returncode == 0, last.stderr
    assert not (cache / "models--acme--tiny-GGUF" / "snapshots" / COMMIT).exists()  # the revision went with it
    assert smollm2_path.is_file()


def test_show_describes_a_gguf_without_loading_it(cache, tmp_path):
    result = mistral("show", "acme/tiny-GGUF/tiny-Q4_K_M.gguf", "--json", cache_root=cache, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["architecture"] == "llama" and card["parameters"] == 134_515_008 and card["context_length"] == 8192
    assert card["tensor_types"]["attn_q.weight"] == {"Q4_1": 30 * 576 * 576}
    assert card["tensor_types"]["token_embd.weight"] == {"Q8_0": 49152 * 576}
    assert card["rope"]["freq_base"] == 100000.0 and card["layers"] == 30 and card["kv_heads"] == 3
    assert card["tokenizer"]["bos"] == {"id": 1, "text": "<|im_start|>"}
    assert card["tokenizer"]["eos"] == {"id": 2, "text": "<|im_end|>"}
    assert card["tokenizer"]["vocab_size"] == 49152 and "<|im_start|>" in card["chat_template"]
    text = mistral("show", "acme/tiny-GGUF/tiny-Q4_K_M.gguf", cache_root=cache, tmp_path=tmp_path).stdout
    assert "parameters    134,515,008" in text and "BOS / EOS     '<|im_start|>' (id 1)" in text
    template = mistral("show", "acme/tiny-GGUF:Q4_K_M", "--template", cache_root=cache, tmp_path=tmp_path)
    assert template.stdout.strip() == card["chat_template"].strip()


def test_show_describes_a_model_directory(minilm_path, tmp_path):
    result = mistral("show", str(minilm_path), "--json", cache_root=tmp_path / "hub", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["format"] == "safetensors" and card["architecture"] == "bert"
    assert card["parameters"] > 20_000_000 and card["context_length"] == 512 and card["layers"] == 6
    assert card["tokenizer"]["model"] == "WordPiece" and card["tokenizer"]["vocab_size"] >= 30522
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00")
    bad = mistral("show", str(broken), cache_root=tmp_path / "hub", tmp_path=tmp_path)
    assert bad.returncode == 1 and str(broken) in bad.stderr and "Traceback" not in bad.stderr
