"""The `mistral` command: wiring only. Each subcommand lives in mistralcli/commands/<name>.py and
imports its heavy modules inside the function, so `mistral --help` answers at once."""

import sys

import typer

from mistralcli import __version__
from mistralcli.commands import (
    bench,
    chat,
    config,
    detokenize,
    doctor,
    imatrix,
    login,
    mcp_server,
    models,
    perplexity,
    ps,
    quantize,
    run,
    serve,
    tokenize,
    tools,
)
from mistralcli.commands._command import MistralCommand, MistralGroup
from mistralcli.commands._common import silence_stdout
from mistralcli.errors import MistralError

app = typer.Typer(
    name="mistral",
    cls=MistralGroup,
    help="Run language models (GGUF, safetensors, Hugging Face repos) from the command line.\n\n"
    'Example: mistral run "What is the capital of France?"',
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (model names complete from `mistral models`)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"mistral {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    """Run language models from the command line."""
    if ctx.invoked_subcommand not in ("config", "doctor"):  # these work with a broken file: to mend it, to name it
        from mistralcli.config import default_map

        ctx.default_map = default_map(ctx.command)


app.command("run", cls=MistralCommand)(run.run)
app.command("tokenize", cls=MistralCommand)(tokenize.tokenize)
app.command("detokenize", cls=MistralCommand)(detokenize.detokenize)
app.command("bench", cls=MistralCommand)(bench.bench)
app.command("serve", cls=MistralCommand)(serve.serve)
app.command("ps", cls=MistralCommand)(ps.ps)
app.command("pull", cls=MistralCommand)(models.pull)
app.add_typer(models.app, name="models", cls=MistralGroup)
app.command("list", cls=MistralCommand)(models.list_models)
app.command("show", cls=MistralCommand)(models.show)
app.command("doctor", cls=MistralCommand)(doctor.doctor)
app.command("login", cls=MistralCommand)(login.login)
app.command("logout", cls=MistralCommand)(login.logout)
app.command("chat", cls=MistralCommand)(chat.chat)
app.command("quantize", cls=MistralCommand)(quantize.quantize)
app.command("perplexity", cls=MistralCommand)(perplexity.perplexity)
app.command("imatrix", cls=MistralCommand)(imatrix.imatrix)
app.add_typer(tools.app, name="tools")
app.add_typer(config.app, name="config", cls=MistralGroup)
app.command("mcp-server", cls=MistralCommand)(mcp_server.mcp_server)


def main() -> None:
    try:
        app(prog_name="mistral")  # also as python -m mistralcli: the completion scripts name `mistral`
        code = 0
    except SystemExit as exc:
        code = exc.code
    except MistralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # stdout's reader has gone (`| head`): never an error
        silence_stdout()
        code = 0
    try:
        sys.stdout.flush()  # what is still buffered, here rather than at exit, where a closed pipe is exit 120
    except BrokenPipeError:
        silence_stdout()
    sys.exit(code)
