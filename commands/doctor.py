"""`mistral doctor`: what this machine gives mistralcli (mistralcli/doctor.py), ok / warn / fail with hints."""

import json

import typer

from mistralcli.commands._common import stderr_console, write_stdout

MARKS = {"ok": "[green]ok  [/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]fail[/red]"}


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as one JSON object."),
    offline: bool = typer.Option(False, "--offline", help="Do not try to reach the Hugging Face hub."),
):
    """Check this machine: Python and packages, CPU features and the kernels they select, threads, the compiled
    extensions, the Numba cache, the GPU, the config file, the default model, the hub, writable directories.
    Exits 1 when a check fails.

    Example: mistral doctor --json
    """
    from mistralcli.doctor import as_json as to_json
    from mistralcli.doctor import run_checks

    checks = run_checks(network=not offline)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        write_stdout(json.dumps(to_json(checks), indent=2) + "\n")
    else:
        import os

        from rich.console import Console
        from rich.markup import escape

        console = Console(no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True)
        width = max(len(c.name) for c in checks)
        for c in checks:
            hint = f"  [dim]({escape(c.hint)})[/dim]" if c.hint else ""
            console.print(f"{MARKS[c.status]} {c.name:<{width}}  {escape(c.detail)}{hint}")
    if failed:
        if not as_json:
            stderr_console().print("some checks failed: see their hints")
        raise typer.Exit(1)
