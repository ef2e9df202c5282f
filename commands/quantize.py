"""`mistral quantize`: a model to a GGUF of another type (this step: a GGUF source, the legacy block types)."""

import json
import re
import time
from contextlib import nullcontext
from pathlib import Path

import typer

from mistralcli.commands._common import stderr_console, write_stdout


def quantize(
    model: Path = typer.Option(None, "--model", "-m", help="The source: a GGUF file (required).", show_default=False),
    qtype: str = typer.Option(
        None, "--type", help="Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16 or BF16 (required).", show_default=False
    ),
    output: Path = typer.Option(None, "--output", "-o", help="The GGUF to write.", show_default=False),
    tensor_type: list[str] = typer.Option(
        None, "--tensor-type", help="REGEX=TYPE: tensors whose name matches get TYPE (repeat the flag for several)."
    ),
    output_tensor_type: str = typer.Option(None, "--output-tensor-type", help="The type of output.weight."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the type each tensor would get, write nothing."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    eval_file: Path = typer.Option(
        None, "--eval", help="Then print the source's and the result's perplexity on this text, side by side."
    ),
    eval_ctx: int = typer.Option(512, "--eval-ctx", min=8, help="With --eval: tokens per window."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (or the plan) as one JSON object."),
):
    """Quantize a model to a GGUF file that llama.cpp and mistralcli load.

    Example: mistral quantize -m model-f16.gguf --type Q8_0 -o model-q8_0.gguf

    Plan only: mistral quantize -m model.gguf --type Q4_0 --dry-run   |   per tensor: --tensor-type 'ffn_down=Q8_0'
    """
    from mistralcli.errors import MistralError
    from mistralcli.quantize import gguf_file

    for value, flag in ((model, "--model"), (qtype, "--type")):
        if value is None:
            raise typer.BadParameter("it is required", param_hint=flag)
    try:
        target = gguf_file.type_named(qtype, "--type")
        overrides = [_override(spec) for spec in tensor_type or []]
        out_type = gguf_file.type_named(output_tensor_type, "--output-tensor-type") if output_tensor_type else None
    except MistralError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output is None and not dry_run:
        raise typer.BadParameter("where to write it? (-o OUT.gguf, or --dry-run)", param_hint="--output")
    if eval_file is not None and not eval_file.is_file():
        raise typer.BadParameter(f"{eval_file}: no such file", param_hint="--eval")
    if output is not None and output.exists() and not force and not dry_run:
        raise typer.BadParameter(f"{output} exists (--force replaces it)", param_hint="--output")
    if not model.is_file():
        raise typer.BadParameter(f"{model}: no such file (this step quantizes GGUF sources)", param_hint="--model")
    reader = _open(model)
    console = stderr_console()
    plans = gguf_file.plan(reader, target, overrides, out_type)
    quantized = any(p.source not in (gguf_file.Q.F32, gguf_file.Q.F16, gguf_file.Q.BF16) for p in plans)
    if dry_run:
        _print_plan(plans, as_json)
        return
    if quantized:
        console.print(f"warning: {model} is already quantized: the new file quantizes its dequantized weights again")
    start = time.perf_counter()
    with _progress(console, len(plans)) as advance:
        try:
            gguf_file.write(reader, plans, target, output, advance)
        except OSError as exc:
            console.print(f"error: {output}: cannot write it ({exc.strerror or exc}); nothing was left behind")
            raise typer.Exit(1) from None
    result = {"output": str(output), "type": target.name, **gguf_file.summary(plans, time.perf_counter() - start)}
    if not as_json:
        _print_summary(console, result)
    if eval_file is not None:
        result["perplexity"] = _evaluate(console, model, output, eval_file, eval_ctx)
    if as_json:
        write_stdout(json.dumps(result) + "\n")


def _evaluate(console, source: Path, output: Path, text_file: Path, ctx: int) -> dict:
    """The perplexity of the source and of the result on the same text (mistral perplexity's computation)."""
    from mistralcli.loading.loader import load_model
    from mistralcli.quantize.perplexity import perplexity

    text = text_file.read_text(encoding="utf-8")
    figures = {}
    for what, path in (("source", source), ("result", output)):
        with console.status(f"Perplexity of the {what}…") if console.is_terminal else nullcontext():
            figures[what] = round(perplexity(load_model(str(path)), text, ctx).ppl, 4)
    console.print(
        f"perplexity (--eval-ctx {ctx}): source {figures['source']}, result {figures['result']}", highlight=False
    )
    return figures


def _override(spec: str):
    from mistralcli.errors import MistralError
    from mistralcli.quantize.gguf_file import type_named

    pattern, sep, name = spec.rpartition("=")
    if not sep or not pattern:
        raise MistralError(f"--tensor-type {spec!r}: write it REGEX=TYPE (ffn_down=Q8_0)")
    try:
        return re.compile(pattern), type_named(name, "--tensor-type")
    except re.error as exc:
        raise MistralError(f"--tensor-type {spec!r}: not a regular expression ({exc})") from None


def _open(path: Path):
    from gguf import GGUFReader

    from mistralcli.errors import MistralError

    try:
        return GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise MistralError(f"{path}: not a GGUF file ({exc})") from None


def _print_plan(plans, as_json: bool) -> None:
    if as_json:
        rows = [
            {"name": p.name, "shape": list(p.shape), "from": p.source.name, "to": p.target.name, "why": p.why}
            for p in plans
        ]
        write_stdout(json.dumps({"tensors": rows}) + "\n")
        return
    for p in plans:
        shape = "x".join(map(str, p.shape))
        write_stdout(f"{p.name}\t{shape}\t{p.source.name} -> {p.target.name}\t{p.why}\n")


class _progress:
    """A bar per tensor on a terminal; nothing elsewhere."""

    def __init__(self, console, total: int):
        self.console, self.total = console, total

    def __enter__(self):
        if not self.console.is_terminal:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("Quantizing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[name]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("q", total=self.total, name="")
        self.bar.start()
        return lambda p: self.bar.update(self.task, advance=1, name=p.name)

    def __exit__(self, *exc):
        if self.console.is_terminal:
            self.bar.stop()


def _print_summary(console, result: dict) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("type")
    table.add_column("tensors", justify="right")
    for name, count in sorted(result["tensors"].items()):
        table.add_row(name, str(count))
    console.print(table)
    mb = 1e6
    console.print(
        f"{result['bytes_before'] / mb:.1f} MB -> {result['bytes_after'] / mb:.1f} MB, "
        f"{result['bits_per_weight']} bits per weight, {result['seconds']:.1f} s: {result['output']}",
        highlight=False,
    )
