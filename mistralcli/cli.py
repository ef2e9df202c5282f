"""The `mistral` command: wiring only. Each subcommand lives in mistralcli/commands/<name>.py and
imports its heavy modules inside the function, so `mistral --help` answers at once."""

import sys

import typer

from mistralcli import __version__
from mistralcli.commands import bench, detokenize, run, serve, tokenize
from mistralcli.errors import MistralError

app = typer.Typer(
    name="mistral",
    help="Run language models (GGUF, safetensors, Hugging Face repos) from the command line.\n\n"
    'Example: mistral run "What is the capital of France?"',
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"mistral {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    """Run language models from the command line."""


app.command("run")(run.run)
app.command("tokenize")(tokenize.tokenize)
app.command("detokenize")(detokenize.detokenize)
app.command("bench")(bench.bench)
app.command("serve")(serve.serve)


def main() -> None:
    try:
        app()
    except MistralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
