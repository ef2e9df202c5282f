"""`mistral config`: the user config file of defaults (mistralcli/config.py): path, show, set, unset."""

import json

import typer

from mistralcli.commands._command import MistralCommand
from mistralcli.commands._common import stderr_console, write_stdout

app = typer.Typer(
    help="Defaults for the commands' flags, in a TOML file: a flag wins, then MISTRALCLI_<KEY>, then the file.\n\n"
    "Example: mistral config set temperature 0.2",
    no_args_is_help=True,
)


@app.command("path", cls=MistralCommand)
def path():
    """Print where the config file is (it may not exist yet).

    Example: mistral config path
    """
    from mistralcli.config import config_path

    write_stdout(f"{config_path()}\n")


@app.command("show", cls=MistralCommand)
def show(
    sources: bool = typer.Option(False, "--sources", help="Say where each value comes from."),
    all_keys: bool = typer.Option(False, "--all", help="List every key, set or not."),
    as_json: bool = typer.Option(False, "--json", help="Print the values (and sources) as one JSON object."),
):
    """Show the values set, in the environment (MISTRALCLI_<KEY>) and the file; a flag given to a command wins over
    both.

    Example: mistral config show --sources
    """
    from mistralcli.config import KEYS, effective, env_name

    values = effective()
    if as_json:
        out = {k: ({"value": v, "source": s} if sources else v) for k, (v, s) in values.items()}
        write_stdout(json.dumps(out, indent=2) + "\n")
        return
    lines = []
    for key, spec in KEYS.items():
        if key not in values and not all_keys:
            continue
        value, source = values.get(key, (None, "built-in"))
        shown = "(unset)" if value is None else json.dumps(value)
        line = f"{key} = {shown}"
        if sources:
            line += f"    # {source}" + ("" if key in values else f"; {env_name(key)}, or: {spec.help}")
        lines.append(line)
    if not lines:
        stderr_console().print("nothing set: mistral config set KEY VALUE (mistral config show --all lists the keys)")
        return
    write_stdout("\n".join(lines) + "\n")


@app.command("set", cls=MistralCommand)
def set_key(
    key: str = typer.Argument(..., help="One of the keys `mistral config show --all` lists."),
    value: str = typer.Argument(..., help="Its value (a list: paths separated as PATH is)."),
):
    """Set a key in the config file.

    Example: mistral config set model ~/models/qwen2.5-0.5b-instruct-q4_k_m.gguf
    """
    from mistralcli.config import parse_value, write

    try:
        parsed = parse_value(key, value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="KEY" if "unknown key" in str(exc) else "VALUE") from None
    where = write({key: parsed})
    stderr_console().print(f"{key} = {json.dumps(parsed)} in {where}", highlight=False, markup=False)


@app.command("unset", cls=MistralCommand)
def unset(key: str = typer.Argument(..., help="The key to remove from the config file.")):
    """Remove a key from the config file (its built-in default applies again).

    Example: mistral config unset temperature
    """
    from mistralcli.config import KEYS, write

    if key not in KEYS:
        raise typer.BadParameter(f"unknown key {key!r} (known: {', '.join(KEYS)})", param_hint="KEY")
    where = write({}, (key,))
    stderr_console().print(f"{key} unset in {where}", highlight=False, markup=False)
