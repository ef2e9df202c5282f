"""`mistral tokenize`: the token ids of raw text (no chat template)."""

import json

import typer

from mistralcli.commands._common import (
    REPLACE_INVALID_HELP,
    model_option,
    read_text_argument,
    write_stdout,
)


def tokenize(
    text: str = typer.Argument(None, help="Text to tokenize, or '-' to read it from stdin.", show_default=False),
    model: str = model_option(),
    no_bos: bool = typer.Option(False, "--no-bos", help="Do not add BOS even where the model's metadata says to."),
    as_json: bool = typer.Option(False, "--json", help='Print {"ids": [...], "pieces": [...]}.'),
    replace_invalid: bool = typer.Option(False, "--replace-invalid", help=REPLACE_INVALID_HELP.format("TEXT")),
):
    """Print the token ids of TEXT, separated by spaces (special tokens in TEXT count as specials).

    Example: mistral tokenize "Hello world"
    """
    text = read_text_argument(text, "TEXT", replace_invalid)
    from mistralcli.loading.loader import load_tokenizer

    tokenizer, _ = load_tokenizer(model)
    ids = tokenizer.encode(text, add_special=not no_bos)
    if as_json:
        pieces = [tokenizer.decode_bytes([i], skip_special=False).decode("utf-8", errors="replace") for i in ids]
        write_stdout(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False) + "\n")
    else:
        write_stdout(" ".join(map(str, ids)) + "\n")
