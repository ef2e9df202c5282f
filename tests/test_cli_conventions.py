"""What every `mistral` command shares: help that shows what each flag takes, one meaning per short
flag, and usage errors (exit 2) that quote the value they refuse. In process: nothing here loads a model."""

import re

import pytest
import typer
from typer.testing import CliRunner

from mistralcli.cli import app

# The one meaning of each short flag, across the tool (-n: tokens to generate, in run and in bench).
SHORT_FLAGS = {
    "-h": {"--help"},
    "-V": {"--version"},
    "-m": {"--model"},
    "-s": {"--system"},
    "-n": {"--max-tokens", "--gen-tokens"},
    "-t": {"--temperature"},
    "-p": {"--prompt-tokens"},
    "-r": {"--repetitions"},
    # the one short flag of two meanings: chat's -c is `llm chat -c` (continue), which chat users expect
    "-c": {"--concurrency", "--continue"},
    "-q": {"--quiet"},  # every command's (serve's own: no request log lines either)
    "-v": {"--verbose"},
    "-o": {"--output"},
    "-f": {"--file"},
}


VALUE_KINDS = {"TEXT", "INTEGER", "FLOAT", "PATH"}


def commands():
    """(name, click command, its context) for the root and each subcommand, as `mistral` runs them."""
    root = typer.main.get_command(app)
    root_ctx = typer.Context(root, info_name="mistral", **root.context_settings)
    subs = [(name, cmd, typer.Context(cmd, info_name=name, parent=root_ctx)) for name, cmd in root.commands.items()]
    return [("", root, root_ctx), *subs]


def invoke(*args):
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "200"})
    # the error box wraps long lines: read it as one line
    result.text = " ".join(line.strip("│╭╮╰╯─ ") for line in result.output.splitlines())
    return result


@pytest.mark.parametrize("name", [name for name, _, _ in commands()])
def test_help_shows_what_each_flag_takes(name):
    _, command, ctx = next(c for c in commands() if c[0] == name)
    result = invoke(*([name] if name else []), "--help")
    assert result.exit_code == 0, result.output
    assert not re.findall(r"<[a-z][a-z \[\]]*>", result.output)  # no <bool>, <int range>, <list[str]>, ...
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ") and line.split()[1:]}
    for param in command.get_params(ctx):
        if isinstance(param, typer.core.TyperArgument):
            shown = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
            assert (shown if param.required else f"[{shown}]") in usage.split(), usage
            continue
        row = rows[next(opt for opt in param.opts if opt.startswith("--"))]
        words = [w for w in row.split()[2:] if not w.startswith("-")]
        if param.is_flag:  # takes no value: its help comes next
            assert words[0] not in VALUE_KINDS, row
        elif param.nargs > 1 and param.metavar:  # several values, named (chat --export NAME FILE)
            assert words[: param.nargs] == param.metavar.split(), row
        else:
            assert words[0] in VALUE_KINDS, row


def test_usage_lines_name_arguments_in_capitals():
    assert "Usage: mistral run [OPTIONS] [PROMPT]" in invoke("run", "--help").output
    assert "Usage: mistral tokenize [OPTIONS] [TEXT]" in invoke("tokenize", "--help").output
    assert "Usage: mistral detokenize [OPTIONS] IDS..." in invoke("detokenize", "--help").output


def test_each_short_flag_has_one_meaning():
    found: dict[str, set[str]] = {}
    for _, command, ctx in commands():
        for param in command.get_params(ctx):
            longs = [opt for opt in param.opts if opt.startswith("--")]
            for short in (opt for opt in param.opts if len(opt) == 2 and opt.startswith("-")):
                found.setdefault(short, set()).update(longs)
    assert found == SHORT_FLAGS


@pytest.mark.parametrize(
    "args, quoted",
    [
        (["run", "hi", "--max-tokens", "notanumber"], "'notanumber' is not a valid integer"),
        (["run", "hi", "-n", "0"], "'0' is not in the range x>=1"),
        (["run", "hi", "--temperature", "warm"], "'warm' is not a valid number"),
        (["run", "hi", "--top-p", "1.5"], "'1.5' is not in the range 0.0<=x<=1.0"),
        (["serve", "--port", "http"], "'http' is not a valid integer"),
        (["serve", "--port", "70000"], "'70000' is not in the range 0<=x<=65535"),
        (["serve", "--agent-permission", "maybe"], "'maybe' is not one of auto, ask, deny"),
        (["serve", "--agent-shell"], "--agent-shell: it needs --enable-agent-tools"),
        (["serve", "--enable-agent-tools", "--agent-sandbox-root", "/no/such/dir"], "/no/such/dir is not a directory"),
        (["serve", "--mcp-config", "/no/such/mcp.json"], "/no/such/mcp.json: no such MCP config file"),
        (["serve", "--max-tool-rounds", "0"], "'0' is not in the range x>=1"),
        (["detokenize", "12", "x"], "'x' is not a valid integer"),
        (["bench", "--gen-tokens", "many"], "'many' is not a valid integer"),
        (["serve", "--kv-cache-dtype", "bf16"], "'bf16' is not one of f32, f16"),
        (["run", "hi", "--kv-cache-dtype", "q8"], "'q8' is not one of f32, f16"),
        (["bench", "--kv-cache-dtype", "f16", "--url", "http://127.0.0.1:9"], "sets the cache of an engine"),
    ],
)
def test_usage_errors_quote_the_refused_value(args, quoted):
    result = invoke(*args)
    assert result.exit_code == 2 and quoted in result.text, result.output
    assert "Input should be" not in result.text


def float_options():
    for name, command, _ in commands():
        for param in command.params:
            if isinstance(param, typer.core.TyperOption) and param.type_descriptor.annotation is float:
                yield name, param.opts[0]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
@pytest.mark.parametrize("name, option", list(float_options()))
def test_every_float_option_refuses_non_finite_numbers(name, option, value):
    args = [name, "hi", option, value] if name in ("run",) else [name, option, value]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert f"'{value}' is not a finite number" in result.text


def test_float_options_are_found():
    assert {("run", "--temperature"), ("serve", "--kv-cache-mb")} <= set(float_options())
