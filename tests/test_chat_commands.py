"""The chat's slash commands as a script types them (stdin not a terminal), over the default model: what each
shows, what it changes in the store, and that a mistake is said and changes nothing. And the models the chat
finds (/models): the installed default, the Hugging Face cache, the configured directories."""

import json
import os
from pathlib import Path

import pytest
from chat_helpers import run_chat

from mistralcli.chat.store import SessionStore

pytestmark = pytest.mark.slow


def sessions(data_dir) -> dict:
    with SessionStore(data_dir / "sessions.sqlite3") as store:
        return {s.name: store.get(s.name) for s in store.sessions()}


def chat(data_dir, model_path, script: str, *args, **env):
    result = run_chat(data_dir, "-m", str(model_path), "-t", "0", "-n", "12", *args, input=script, **env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_regen_undo_and_slash_text(tmp_path, smollm2_path):
    script = "Hi!\n/regen\nTell me a joke.\n/undo\n/undo\n/undo\n//etc/hosts is a file?\n"
    result = chat(tmp_path, smollm2_path, script, "--session", "s")
    (session,) = sessions(tmp_path).values()
    assert [m.role for m in session.messages] == ["user", "assistant"]
    assert session.messages[0].content == "/etc/hosts is a file?"  # // sends a text that starts with /
    assert result.stderr.count("generated tokens") == 4  # Hi!, its regeneration, the joke, /etc/hosts
    assert "dropped: Tell me a joke." in result.stderr and "dropped: Hi!" in result.stderr
    assert "error: nothing to undo" in result.stderr


def test_sessions_rename_delete_clear_load(tmp_path, smollm2_path):
    script = (
        "/system Be brief.\n/system\nHi!\n/rename first\n/clear\nHello again.\n/sessions\n"
        "/load nope\n/load first\n/delete first\n/sessions\n/system -\n/system\n"
    )
    result = chat(tmp_path, smollm2_path, script)
    assert "Be brief." in result.stdout and "(no system message)" in result.stdout
    assert "no session named 'nope'" in result.stderr
    assert "new session (the last one is kept as first)" in result.stderr
    assert "deleted first" in result.stderr
    remaining = sessions(tmp_path)
    assert "first" not in remaining and len(remaining) == 1
    (other,) = remaining.values()
    assert [m.content for m in other.messages if m.role == "user"] == ["Hello again."]
    assert other.system == "Be brief."  # "/system -" came after /delete had left the chat in no session


def test_set_show_and_mistakes(tmp_path, smollm2_path):
    script = (
        "/set top_k 1.5\n/set top_p 2\n/set stop ###\n/set seed none\n/set repeat_penalty 1.1\n"
        "/set temperature default\n/set\n/stats off\nHi!\n/stats on\nHi again!\n/stats\n/stats maybe\n/copy\n"
    )
    result = chat(tmp_path, smollm2_path, script, DISPLAY="", WAYLAND_DISPLAY="")
    assert "/set top_k: '1.5' is not a whole number" in result.stderr
    assert "/set: top_p must be in (0, 1]" in result.stderr
    assert result.stderr.count("generated tokens") == 1  # /stats off, then on
    assert "2 answers:" in result.stdout
    assert "/stats maybe: say on or off" in result.stderr
    assert "no clipboard here" in result.stderr
    (session,) = sessions(tmp_path).values()
    assert session.params == {"max_tokens": 12, "stop": ["###"], "seed": None, "repetition_penalty": 1.1}
    shown = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.split()}
    assert shown["repetition_penalty"] == ["1.1", "set"] and shown["temperature"] == ["0.8"]  # the default again


def test_model_switch_keeps_the_conversation(tmp_path, smollm2_path, qwen_path):
    script = f"Hi!\n/model {qwen_path}\n/model\nAnd now?\n/model no-such-model\n/models\n"
    result = chat(tmp_path, smollm2_path, script, "--session", "m")
    assert "now chatting with qwen2.5-coder-0.5b-instruct-q4_k_m" in result.stderr
    assert "no-such-model: no such file or directory" in result.stderr
    (session,) = sessions(tmp_path).values()
    first, second = (m for m in session.messages if m.role == "assistant")
    assert first.model == "SmolLM2-135M-Instruct.Q4_1" and second.model == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert second.prompt_tokens > first.prompt_tokens  # the conversation went along
    assert session.model == str(qwen_path)
    assert "default" in result.stdout and "llama" in result.stdout and "Q4_1" in result.stdout  # /models


def fake_hub_cache(root: Path, repo: str, model_path: Path) -> None:
    """The layout huggingface_hub writes: blobs, refs/main, and a snapshot linking to its blob."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "blobs").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    blob = folder / "blobs" / "b10b"
    blob.symlink_to(model_path)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "tiny.Q4_1.gguf").symlink_to(os.path.relpath(blob, snapshot))


def test_models_found_in_the_hub_cache_and_configured_dirs(tmp_path, smollm2_path, qwen_path):
    hub = tmp_path / "hub"
    fake_hub_cache(hub, "someone/tiny-GGUF", smollm2_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "coder.gguf").symlink_to(qwen_path)
    config = tmp_path / "config" / "mistralcli"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(f'model_dirs = ["{mine}"]\n')
    env = {"HF_HUB_CACHE": str(hub), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = chat(tmp_path, smollm2_path, "/models\n/model someone/tiny-GGUF/tiny.Q4_1.gguf\n", **env)
    assert "someone/tiny-GGUF/tiny.Q4_1.gguf" in result.stdout and "hub cache" in result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    # the same file as -m: marked as the current model
    assert rows["someone/tiny-GGUF/tiny.Q4_1.gguf"] == ["*", "98.4", "MB", "llama", "Q4_1", "hub", "cache"]
    assert rows[str(mine / "coder.gguf")][2:4] == ["qwen2", "Q4_K_M"] and rows[str(mine / "coder.gguf")][4] == str(mine)
    assert "now chatting with" in result.stderr  # a hub-cache name loads from the cache, offline

    (config / "config.toml").write_text("model_dirs = [oops\n")
    broken = run_chat(tmp_path, "-m", str(smollm2_path), input="/models\n", **env)
    assert f"{config / 'config.toml'}: not valid TOML" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_list_json_is_one_object_per_line(tmp_path, smollm2_path):
    chat(tmp_path, smollm2_path, "Hi!\n", "--session", "one")
    chat(tmp_path, smollm2_path, "Hi!\n", "--session", "two")
    listed = run_chat(tmp_path, "--list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["two", "one"] and all(r["messages"] == 2 for r in rows)
