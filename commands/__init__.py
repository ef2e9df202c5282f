"""One Typer command per file; registered in mistralcli/cli.py."""
