"""`mistral detokenize`: the text of token ids."""

import typer

from mistralcli.commands._common import model_option, write_stdout


def detokenize(
    ids: list[int] = typer.Argument(..., help="Token ids.", show_default=False),
    model: str = model_option(),
    skip_special: bool = typer.Option(False, "--skip-special", help="Leave out control tokens such as <|im_end|>."),
):
    """Print the text that token IDS stand for.

    Example: mistral detokenize 19556 905 17
    """
    from mistralcli.loading.loader import load_tokenizer

    tokenizer, _ = load_tokenizer(model)
    bad = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
    if bad:
        raise typer.BadParameter(
            f"{bad[0]} is not a token id (the vocabulary has {tokenizer.vocab_size})", param_hint="IDS"
        )
    write_stdout(tokenizer.decode(ids, skip_special=skip_special) + "\n")
