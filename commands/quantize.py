"""`mistral quantize`: a model to a GGUF of another type, with llama.cpp's mixes and per-tensor policy."""

import json
import re
import time
from contextlib import nullcontext
from pathlib import Path

import typer

from mistralcli.commands._common import TensorProgress, stderr_console, write_stdout


def quantize(
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="The source (required): a GGUF file, or a safetensors model directory or Hugging Face repo id.",
        show_default=False,
    ),
    qtype: str = typer.Option(
        None,
        "--type",
        help="Q4_K_M, Q5_K_M, Q6_K, Q8_0, ... (required; the list: mistral quantize --list-types).",
        show_default=False,
    ),
    output: Path = typer.Option(None, "--output", "-o", help="The GGUF to write.", show_default=False),
    tensor_type: list[str] = typer.Option(
        None, "--tensor-type", help="REGEX=TYPE: tensors whose name matches get TYPE (repeat the flag for several)."
    ),
    output_tensor_type: str = typer.Option(None, "--output-tensor-type", help="The type of output.weight."),
    token_embedding_type: str = typer.Option(None, "--token-embedding-type", help="The type of token_embd.weight."),
    imatrix_file: Path = typer.Option(
        None, "--imatrix", help="An importance matrix (mistral imatrix's or llama-imatrix's) for the K and IQ types."
    ),
    pure: bool = typer.Option(False, "--pure", help="Every matrix at --type: no mix rules (llama-quantize --pure)."),
    list_types: bool = typer.Option(False, "--list-types", help="List the types and what they hold, then exit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the type each tensor would get, write nothing."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    eval_file: Path = typer.Option(
        None, "--eval", help="Then print the source's and the result's perplexity on this text, side by side."
    ),
    eval_ctx: int = typer.Option(512, "--eval-ctx", min=8, help="With --eval: tokens per window."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (or the plan) as one JSON object."),
):
    """Quantize a model to a GGUF file that llama.cpp and mistralcli load.

    Example: mistral quantize -m model-f16.gguf --type Q4_K_M -o model-q4_k_m.gguf

    Plan only: mistral quantize -m model.gguf --type Q4_K_M --dry-run   |   per tensor: --tensor-type 'ffn_down=Q8_0'
    """
    from mistralcli.errors import MistralError
    from mistralcli.quantize import gguf_file, policy

    if list_types:
        _print_types(as_json)
        return
    for value, flag in ((model, "--model"), (qtype, "--type")):
        if value is None:
            raise typer.BadParameter("it is required", param_hint=flag)
    try:
        mix = policy.mix_named(qtype)
        options = policy.Options(
            overrides=[_override(spec) for spec in tensor_type or []],
            output_type=_tensor_type(output_tensor_type, "--output-tensor-type"),
            token_embedding_type=_tensor_type(token_embedding_type, "--token-embedding-type"),
            pure=pure,
        )
    except MistralError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output is None and not dry_run:
        raise typer.BadParameter("where to write it? (-o OUT.gguf, or --dry-run)", param_hint="--output")
    importance = None
    if imatrix_file is not None:
        from mistralcli.quantize.imatrix import load as load_imatrix

        try:
            importance = load_imatrix(imatrix_file).importance()
        except MistralError as exc:
            raise typer.BadParameter(str(exc), param_hint="--imatrix") from None
        options.has_imatrix = True
    if eval_file is not None and not eval_file.is_file():
        raise typer.BadParameter(f"{eval_file}: no such file", param_hint="--eval")
    if output is not None and output.exists() and not force and not dry_run:
        raise typer.BadParameter(f"{output} exists (--force replaces it)", param_hint="--output")
    reader = _open(model)
    console = stderr_console()
    plans = gguf_file.plan(reader, mix, options)
    if importance is not None:
        _check_imatrix(console, plans, importance, imatrix_file)
    quantized = any(p.source not in (gguf_file.Q.F32, gguf_file.Q.F16, gguf_file.Q.BF16) for p in plans)
    if dry_run:
        _print_plan(plans, as_json)
        return
    if quantized:
        console.print(f"warning: {model} is already quantized: the new file quantizes its dequantized weights again")
    start = time.perf_counter()
    with TensorProgress(console, "Quantizing", len(plans)) as advance:
        try:
            gguf_file.write(reader, plans, mix, output, advance, importance)
        except OSError as exc:
            console.print(f"error: {output}: cannot write it ({exc.strerror or exc}); nothing was left behind")
            raise typer.Exit(1) from None
    result = {"output": str(output), "type": mix.name, **gguf_file.summary(plans, time.perf_counter() - start)}
    if not as_json:
        _print_summary(console, result)
    if eval_file is not None:
        result["perplexity"] = _evaluate(console, model, output, eval_file, eval_ctx)
    if as_json:
        write_stdout(json.dumps(result) + "\n")


def _check_imatrix(console, plans, importance: dict, path: Path) -> None:
    """The imatrix must be this model's: its columns match; a K or IQ matrix it does not cover is named."""
    from mistralcli.quantize import K_TYPES

    weighted = [p for p in plans if p.target in K_TYPES]
    for p in weighted:
        found = importance.get(p.name)
        if found is not None and found.shape[-1] != p.shape[-1]:
            raise typer.BadParameter(
                f"{path}: {p.name} has {found.shape[-1]} columns there and {p.shape[-1]} in the model: "
                "an importance matrix of another model",
                param_hint="--imatrix",
            )
    missing = [p.name for p in weighted if p.name not in importance]
    if weighted and len(missing) == len(weighted):
        raise typer.BadParameter(f"{path}: none of this model's matrices is in it", param_hint="--imatrix")
    if missing:
        console.print(f"warning: {path} has no data for {len(missing)} matrices ({missing[0]}, ...): quantized without")


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


def _tensor_type(name: str | None, flag: str):
    from mistralcli.quantize.policy import tensor_type_named

    return None if name is None else tensor_type_named(name, flag)


def _override(spec: str):
    from mistralcli.errors import MistralError
    from mistralcli.quantize.policy import tensor_type_named

    pattern, sep, name = spec.rpartition("=")
    if not sep or not pattern:
        raise MistralError(f"--tensor-type {spec!r}: write it REGEX=TYPE (ffn_down=Q8_0)")
    try:
        return re.compile(pattern), tensor_type_named(name, "--tensor-type")
    except re.error as exc:
        raise MistralError(f"--tensor-type {spec!r}: not a regular expression ({exc})") from None


def _open(spec: str):
    """A GGUF (ours, through the loader) or a Hugging Face checkpoint (hf_source) from what --model names."""
    from mistralcli.errors import MistralError
    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.loading.resolve import resolve_model
    from mistralcli.quantize.hf_source import is_hf_source, open_hf

    try:
        path = resolve_model(spec)
    except MistralError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    if is_hf_source(path):
        return open_hf(path)
    if path.is_dir():
        raise typer.BadParameter(f"{path}: neither a GGUF file nor a model directory (no config.json)", "--model")
    return open_gguf(path)


_ABOUT = {
    "Q4_0": "4.5 bpw, one scale per 32",
    "Q4_1": "5.0 bpw, scale and minimum per 32",
    "Q5_0": "5.5 bpw",
    "Q5_1": "6.0 bpw",
    "Q8_0": "8.5 bpw, near lossless",
    "Q2_K": "mostly Q2_K (2.6 bpw), attn_v and ffn_down at Q3_K/Q4_K",
    "Q3_K_S": "all Q3_K (3.4 bpw)",
    "Q3_K_M": "Q3_K, attn_v/ffn_down/attn_output raised to Q4_K/Q5_K",
    "Q3_K_L": "Q3_K, attn_v/ffn_down/attn_output at Q5_K",
    "Q4_K_S": "Q4_K (4.5 bpw), the first attn_v and ffn_down at Q5_K",
    "Q4_K_M": "Q4_K, half of attn_v and ffn_down at Q6_K (the usual choice)",
    "Q5_K_S": "all Q5_K (5.5 bpw)",
    "Q5_K_M": "Q5_K, half of attn_v and ffn_down at Q6_K",
    "Q6_K": "all Q6_K (6.6 bpw)",
    "IQ4_NL": "4.5 bpw, a non-linear grid per 32",
    "IQ4_XS": "4.25 bpw, IQ4_NL's grid with 6-bit scales per 256",
    "F16": "16 bits",
    "BF16": "16 bits, float32's range",
}


def _print_types(as_json: bool) -> None:
    from mistralcli.quantize.policy import ALIASES, MIXES

    if as_json:
        rows = [{"type": name, "default": mix.default.name, "about": _ABOUT[name]} for name, mix in MIXES.items()]
        write_stdout(json.dumps({"types": rows, "aliases": ALIASES}) + "\n")
        return
    for name in MIXES:
        write_stdout(f"{name}\t{_ABOUT[name]}\n")
    for alias, name in ALIASES.items():
        write_stdout(f"{alias}\tthe same as {name}\n")


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
