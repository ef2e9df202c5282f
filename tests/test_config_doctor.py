"""The config file and its precedence (flag > MISTRALCLI_* > config.toml > built-in), `mistral config`,
`mistral doctor`, shell completion (model names from `mistral models`), `mistral login` / `logout`."""

import json
import os
import subprocess
import sys

import pytest

from tests.test_hub import hub_cache


def mistral(*args, tmp_path, env=None, stdin=None, timeout=120):
    full = {
        **os.environ,
        "NO_COLOR": "1",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    for key in [k for k in full if k.startswith("MISTRALCLI_") and k not in (env or {})]:
        if key not in ("MISTRALCLI_CACHE", "MISTRALCLI_TEST_MODELS"):
            del full[key]
    return subprocess.run(
        [sys.executable, "-m", "mistralcli", *args],
        capture_output=True,
        text=True,
        env=full,
        input=stdin,
        timeout=timeout,
    )


def generated(result) -> int:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["usage"]["completion_tokens"]


def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path):
    assert mistral("config", "set", "max_tokens", "3", tmp_path=tmp_path).returncode == 0
    run = ("run", "Tell me a story.", "--ignore-eos", "--temperature", "0", "--json")
    assert generated(mistral(*run, tmp_path=tmp_path)) == 3
    assert generated(mistral(*run, tmp_path=tmp_path, env={"MISTRALCLI_MAX_TOKENS": "2"})) == 2
    assert generated(mistral(*run, "-n", "1", tmp_path=tmp_path, env={"MISTRALCLI_MAX_TOKENS": "2"})) == 1
    shown = mistral("config", "show", "--sources", tmp_path=tmp_path, env={"MISTRALCLI_THREADS": "1"})
    lines = shown.stdout.splitlines()
    assert any(line.startswith("max_tokens = 3") and "config.toml" in line for line in lines)
    assert any(line.startswith("threads = 1") and "env MISTRALCLI_THREADS" in line for line in lines)
    as_json = json.loads(mistral("config", "show", "--json", tmp_path=tmp_path).stdout)
    assert as_json == {"max_tokens": 3}
    assert mistral("config", "unset", "max_tokens", tmp_path=tmp_path).returncode == 0
    assert json.loads(mistral("config", "show", "--json", tmp_path=tmp_path).stdout) == {}


def test_config_path_and_keys(tmp_path):
    path = mistral("config", "path", tmp_path=tmp_path).stdout.strip()
    assert path == str(tmp_path / "config" / "mistralcli" / "config.toml")
    every = mistral("config", "show", "--all", "--sources", tmp_path=tmp_path).stdout
    for key in ("model", "threads", "temperature", "host", "port", "api_keys_file", "model_dirs", "mcp_config"):
        assert f"{key} = (unset)" in every


@pytest.mark.parametrize(
    ("args", "quoted"),
    [
        (("set", "temperature", "hot"), "temperature must be a number, not 'hot'"),
        (("set", "colour", "blue"), "unknown key 'colour'"),
        (("unset", "colour"), "unknown key 'colour'"),
    ],
)
def test_bad_config_commands_are_usage_errors(tmp_path, args, quoted):
    result = mistral("config", *args, tmp_path=tmp_path)
    assert result.returncode == 2 and quoted in result.stderr and "Traceback" not in result.stderr


def test_a_malformed_config_is_one_line_naming_file_key_and_problem_and_config_mends_it(tmp_path):
    path = tmp_path / "config" / "mistralcli" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('# my defaults\ntemperature = "hot"\nthreads = 1\n')
    result = mistral("run", "Hi", tmp_path=tmp_path)
    assert result.returncode == 1 and not result.stdout
    assert result.stderr.strip() == f"error: {path}: temperature: must be a number, not 'hot'"
    assert mistral("config", "unset", "temperature", tmp_path=tmp_path).returncode == 0
    assert path.read_text() == "# my defaults\nthreads = 1\n"  # the comment kept (tomlkit)
    path.write_text("[broken\n")
    result = mistral("run", "Hi", tmp_path=tmp_path)
    assert result.returncode == 1 and f"error: {path}: not valid TOML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    path.write_text("colour = 'blue'\n")
    unknown = mistral("run", "Hi", tmp_path=tmp_path)
    assert unknown.returncode == 1 and "unknown key 'colour'" in unknown.stderr


def test_doctor_json_reports_each_check(tmp_path):
    result = mistral("doctor", "--json", "--offline", tmp_path=tmp_path)
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert result.returncode == (1 if report["status"] == "fail" else 0)
    assert all(c["status"] in ("ok", "warn", "fail") for c in checks.values())
    for name in ("python", "numpy", "numba", "cpu", "threads", "extensions", "numba cache", "gpu", "config", "hub"):
        assert name in checks, name
    assert checks["extensions"]["status"] == "ok"  # the suite runs on the compiled extensions
    assert "kernels: " in checks["cpu"]["detail"]
    assert checks["hub"]["detail"].startswith("HF_HUB_OFFLINE is set")
    text = mistral("doctor", "--offline", tmp_path=tmp_path).stdout
    assert any(line.startswith("ok   python") for line in text.splitlines())


def test_doctor_names_a_broken_config(tmp_path):
    path = tmp_path / "config" / "mistralcli" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("threads = 'many'\n")
    report = json.loads(mistral("doctor", "--json", "--offline", tmp_path=tmp_path).stdout)
    config = next(c for c in report["checks"] if c["name"] == "config")
    assert config["status"] == "fail" and "threads: must be an integer" in config["detail"] and config["hint"]


def test_completion_scripts_and_model_names(tmp_path, smollm2_path):
    script = mistral("--show-completion", tmp_path=tmp_path, env={"SHELL": "/bin/bash"})
    assert script.returncode == 0 and "_MISTRAL_COMPLETE=complete_" in script.stdout  # the current shell's script
    hub = tmp_path / "hub"
    hub_cache(hub, "acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": smollm2_path})
    env = {
        "HF_HUB_CACHE": str(hub),
        "_MISTRAL_COMPLETE": "complete_bash",
        "COMP_WORDS": "mistral run -m acme/",
        "COMP_CWORD": "3",
    }
    completed = mistral(tmp_path=tmp_path, env=env)
    assert completed.stdout.split() == ["acme/tiny-GGUF/tiny-Q4_K_M.gguf"]


def test_login_needs_the_hub_and_stores_nothing_without_it_and_logout_removes_the_token(tmp_path):
    result = mistral(
        "login",
        tmp_path=tmp_path,
        stdin="hf_notreal\n",
        env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert result.returncode == 1 and "nothing was stored" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "hf" / "token").exists()
    empty = mistral("login", tmp_path=tmp_path, stdin="\n")
    assert empty.returncode == 2 and "no token given" in empty.stderr
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text("hf_stored")
    out = mistral("logout", tmp_path=tmp_path)
    assert out.returncode == 0 and "logged out" in out.stderr and not (tmp_path / "hf" / "token").exists()
    again = mistral("logout", tmp_path=tmp_path)
    assert again.returncode == 0 and again.stderr.strip() == "not logged in: no token is stored"


def test_every_command_takes_verbose_and_quiet(tmp_path):
    loud = mistral("run", "Hi", "-n", "2", "-t", "0", "--verbose", tmp_path=tmp_path)
    assert loud.returncode == 0 and "INFO mistralcli.loading: loaded" in loud.stderr
    plain = mistral("run", "Hi", "-n", "2", "-t", "0", tmp_path=tmp_path)
    assert plain.stdout == loud.stdout and "INFO" not in plain.stderr
    noted = mistral("config", "set", "threads", "1", tmp_path=tmp_path)
    assert "threads = 1 in" in noted.stderr
    quiet = mistral("config", "set", "threads", "2", "-q", tmp_path=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    failing = mistral("ps", "--url", "http://127.0.0.1:9", "--quiet", tmp_path=tmp_path)
    assert failing.returncode == 1 and "error: no server answers" in failing.stderr  # errors still show
