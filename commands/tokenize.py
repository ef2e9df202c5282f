"""`mistral tokenize`: the token ids of raw text (no chat template)."""

import json

import typer

from mistralcli.commands._common import MODEL_HELP, read_text_argument


def tokenize(
    text: str = typer.Argument(None, help="Text to tokenize, or '-' to read it from stdin.", show_default=False),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP, show_default=False),
    no_bos: bool = typer.Option(False, "--no-bos", help="Do not add BOS even where the model's metadata says to."),
    as_json: bool = typer.Option(False, "--json", help='Print {"ids": [...], "pieces": [...]}.'),
):
    """Print the token ids of TEXT, separated by spaces (special tokens in TEXT count as specials).

    Example: mistral tokenize "Hello world"
    """
    text = read_text_argument(text, "TEXT")
    from mistralcli.loading.loader import load_tokenizer

    tokenizer, _ = load_tokenizer(model)
    ids = tokenizer.encode(text, add_special=not no_bos)
    if as_json:
        pieces = [tokenizer.decode_bytes([i], skip_special=False).decode("utf-8", errors="replace") for i in ids]
        print(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False))
    else:
        print(" ".join(map(str, ids)))
