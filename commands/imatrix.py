"""`mistral imatrix`: the importance matrix of a model over a calibration text, in llama.cpp's GGUF format."""

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


def imatrix(
    model: str = model_option(),
    file: Path = typer.Option(None, "--file", "-f", help="The calibration text (required).", show_default=False),
    output: Path = typer.Option(Path("imatrix.gguf"), "--output", "-o", help="The imatrix GGUF to write."),
    ctx: int = typer.Option(512, "--ctx", min=16, help="Tokens per window (llama.cpp's -c)."),
    with_output: bool = typer.Option(False, "--process-output", help="Also collect output.weight's (llama.cpp's)."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for the kernels."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: matrices, windows, tokens, ppl."),
):
    """The importance matrix (each matrix's mean squared input per column) over a calibration text, for
    mistral quantize --imatrix, written as llama.cpp's llama-imatrix writes it: either tool reads the other's.

    Example: mistral imatrix -m model-f16.gguf -f calibration.txt -o imatrix.gguf

    Then: mistral quantize -m model-f16.gguf --type Q4_K_M --imatrix imatrix.gguf -o model-q4_k_m.gguf
    """
    from mistralcli.errors import MistralError
    from mistralcli.loading.loader import load_model
    from mistralcli.quantize import imatrix as im

    if output.exists() and not force:
        raise typer.BadParameter(f"{output} exists (--force replaces it)", param_hint="--output")
    text = read_text_file(file)
    console = stderr_console()
    loaded = load_model(model, threads=threads)
    report = window_reporter(console, as_json)
    try:
        stats, ppl = im.collect(loaded, text, ctx, with_output, report)
    except MistralError as exc:
        raise typer.BadParameter(str(exc), param_hint="--file") from None
    stats.datasets = [str(file)]
    try:
        im.save(stats, output)
    except OSError as exc:
        console.print(f"error: {output}: cannot write it ({exc.strerror or exc}); nothing was left behind")
        raise typer.Exit(1) from None
    summary = {
        "output": str(output),
        "matrices": len(stats.sums),
        "windows": stats.chunk_count,
        "ctx": ctx,
        "ppl": round(ppl.ppl, 6),
        "seconds": round(ppl.seconds, 3),
    }
    if as_json:
        write_stdout(json.dumps(summary) + "\n")
    else:
        console.print(
            f"{summary['matrices']} matrices over {stats.chunk_count} windows of {ctx} tokens (PPL {ppl.ppl:.4f}): "
            f"{output}",
            highlight=False,
        )
