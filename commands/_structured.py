"""The output constraint flags `mistral run` and `mistral bench` share (--json-schema, --json-object, --regex,
--grammar): read and checked before any model is loaded, a usage error naming the flag."""

import json
from pathlib import Path

import typer


def structured_option(json_schema: str | None, json_object: bool, regex: str | None, grammar: Path | None):
    """The constraint the flags ask for (at most one), checked before any model is loaded: a schema file
    that is missing or not JSON, a regex or grammar llguidance cannot compile, are usage errors."""
    from mistralcli.structured import GrammarError, StructuredOutputs
    from mistralcli.structured.grammars import validate

    given = {
        "--json-schema": json_schema is not None,
        "--json-object": json_object,
        "--regex": regex is not None,
        "--grammar": grammar is not None,
    }
    flags = [flag for flag, on in given.items() if on]
    if len(flags) > 1:
        raise typer.BadParameter(f"{' and '.join(flags)}: give one constraint", param_hint=flags[1])
    if not flags:
        return None
    flag = flags[0]
    try:
        if flag == "--json-schema":
            text = json_schema if json_schema.lstrip().startswith("{") else _read(Path(json_schema), flag)
            try:
                structured = StructuredOutputs(json=json.loads(text))
            except json.JSONDecodeError as exc:
                where = "the schema" if text is json_schema else json_schema
                raise typer.BadParameter(f"{where} is not JSON: {exc}", param_hint=flag) from None
        elif flag == "--json-object":
            structured = StructuredOutputs(json_object=True)
        elif flag == "--regex":
            structured = StructuredOutputs(regex=regex)
        else:
            structured = StructuredOutputs(grammar=_read(grammar, flag))
        validate(structured.to_grammar(), structured.kind)
    except GrammarError as exc:
        raise typer.BadParameter(exc.reason, param_hint=flag) from None
    return structured


def _read(path: Path, flag: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise typer.BadParameter(f"cannot read {str(path)!r}: {reason}", param_hint=flag) from None
