"""`mistral perplexity`: a model's perplexity on a text, computed as llama.cpp's llama-perplexity computes it."""

import json
from pathlib import Path

import typer

from mistralcli.commands._common import (
    model_option,
    read_text_file,
    stderr_console,
    window_reporter,
    write_stdout,
)


def perplexity(
    file: Path = typer.Option(None, "--file", "-f", help="The text to score (required).", show_default=False),
    model: str = model_option(),
    ctx: int = typer.Option(512, "--ctx", min=8, help="Tokens per window (llama.cpp's -c)."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for the kernels."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: ppl, error, tokens, windows, time."),
):
    """Perplexity of a model on a text file: windows of --ctx tokens, the second half of each scored, as
    llama.cpp's llama-perplexity does, so the figures compare.

    Example: mistral perplexity -m model.gguf -f wiki.test.raw --ctx 512
    """
    from mistralcli.errors import MistralError
    from mistralcli.loading.loader import load_model
    from mistralcli.quantize.perplexity import perplexity as compute

    text = read_text_file(file)
    console = stderr_console()
    loaded = load_model(model, threads=threads)
    report = window_reporter(console, as_json)
    try:
        result = compute(loaded, text, ctx, report)
    except MistralError as exc:
        raise typer.BadParameter(str(exc), param_hint="--file") from None
    if as_json:
        body = {
            "model": loaded.name,
            "ppl": round(result.ppl, 6),
            "error": round(result.error, 6),
            "tokens_scored": result.tokens_scored,
            "windows": result.windows,
            "ctx": result.ctx,
            "seconds": round(result.seconds, 3),
        }
        write_stdout(json.dumps(body) + "\n")
    else:
        write_stdout(f"PPL = {result.ppl:.4f} +/- {result.error:.5f}\n")
