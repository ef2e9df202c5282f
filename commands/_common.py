"""Helpers the commands share: reading a prompt argument, the model option, stderr console."""

import os
import sys

import typer

MODEL_HELP = "GGUF file, model directory, or Hugging Face repo id (org/name or org/name/file.gguf). Default: SmolLM2-135M-Instruct Q4_1."  # noqa: E501


def read_text_argument(text: str | None, name: str = "PROMPT") -> str:
    """The argument, or stdin when it is '-'; a usage error when neither is given."""
    if text == "-":
        return sys.stdin.read()
    if text is None:
        raise typer.BadParameter(f"give {name} as an argument, or '-' to read it from stdin", param_hint=name)
    return text


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, no_color="NO_COLOR" in os.environ)
