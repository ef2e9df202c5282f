"""How every `mistral` command reads its flags: click's conventions where Typer 0.29 departs from them.

Typer 0.29 converts values through pydantic and renders help itself, which shows through as
- a refusal without the value refused ("Input should be a valid integer"): here it quotes the value;
- `inf` and `nan` taken as numbers: here every float parameter refuses them;
- flags shown as taking a value (`--json <bool>`) and types as `<int range>`: here flags show no type
  and values show click's names (TEXT, INTEGER, FLOAT, PATH);
- arguments shown as `[prompt]` and `{ids}...` in the usage line: here `[PROMPT]` and `IDS...`;
- a closed stdout (`mistral ... | head`) as exit 1: here exit 0, quietly.
The root app and each command use these classes (`cls=`); their parameters become the subclasses below."""

import math
from typing import get_args, get_origin

import typer
import typer.main
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from mistralcli.commands._common import silence_stdout

TYPE_NAMES = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN"}
RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _item_type(param) -> type:
    """The type of one value of param (list[float] -> float)."""
    annotation = param.type_descriptor.annotation
    if get_origin(annotation) in (list, tuple):
        args = get_args(annotation)
        annotation = args[0] if args else str
    return annotation


def _type_name(param) -> str:
    annotation = _item_type(param)
    if param.type_descriptor.is_path:
        return "PATH"
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", "VALUE").upper())


def _refusal(param, error: dict) -> str:
    """click's wording for a value pydantic refused, quoting the value."""
    value, kind = error.get("input"), error.get("type", "")
    if kind.startswith("int_"):
        return f"{value!r} is not a valid integer."
    if kind.startswith("float_"):
        return f"{value!r} is not a valid number."
    if kind in RANGE_ERRORS:
        return f"{value!r} is not in the range {param._get_number_range_help_str()}."
    return f"{value!r}: {error.get('msg', 'invalid value')}"


def _process_value(param, parent_process_value, ctx, value):
    """process_value of both parameter kinds: refusals that quote the value, and no infinities or NaNs."""
    if _item_type(param) is float:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and _is_non_finite(item):
                raise typer.BadParameter(f"{item!r} is not a finite number.", ctx=ctx, param=param)
    try:
        return parent_process_value(ctx, value)
    except typer.BadParameter as exc:
        errors = getattr(exc.__cause__, "errors", None)
        if callable(errors) and errors():
            raise typer.BadParameter(_refusal(param, errors()[0]), ctx=ctx, param=param) from None
        raise


def _is_non_finite(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False  # not a number at all: the conversion says so


class MistralOption(TyperOption):
    def process_value(self, ctx, value):
        return _process_value(self, super().process_value, ctx, value)

    def display_type_rich(self, ctx) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        return _type_name(self)


class MistralArgument(TyperArgument):
    def process_value(self, ctx, value):
        return _process_value(self, super().process_value, ctx, value)

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else self.name.upper()

    def display_type_rich(self, ctx) -> str | None:
        return _type_name(self)

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _adopt(param):
    """The same parameter, as one of the classes above (they add behaviour, no state)."""
    if type(param) is TyperOption:
        param.__class__ = MistralOption
    elif type(param) is TyperArgument:
        param.__class__ = MistralArgument
    return param


class _Conventions:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            _adopt(param)

    def get_params(self, ctx):  # Typer appends the completion options after __init__
        return [_adopt(param) for param in super().get_params(ctx)]

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        return _adopt(option) if option is not None else None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # stdout's reader has gone (`| head`): never an error (click says exit 1)
            silence_stdout()
            raise typer.Exit(0) from None


def _verbose(value: bool) -> None:
    if value:
        import logging
        import sys

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger = logging.getLogger("mistralcli")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


def _quiet(value: bool) -> None:
    if value:
        from mistralcli.commands import _common

        _common.QUIET = True


_LOG_OPTIONS: list | None = None


def log_options() -> list:
    """--verbose and --quiet, which every command takes (Typer makes them once, from a function of its own)."""
    global _LOG_OPTIONS
    if _LOG_OPTIONS is None:
        template = typer.Typer()

        @template.command()
        def options(
            verbose: bool = typer.Option(
                False,
                "--verbose",
                "-v",
                help="Log what happens (loading, the hub, the server) on stderr.",
                expose_value=False,
                callback=_verbose,
                is_eager=True,
            ),
            quiet: bool = typer.Option(
                False,
                "--quiet",
                "-q",
                help="No progress or notes on stderr: errors and warnings only.",
                expose_value=False,
                callback=_quiet,
                is_eager=True,
            ),
        ):
            pass  # fmt: skip

        _LOG_OPTIONS = [_adopt(p) for p in typer.main.get_command(template).params]
    return _LOG_OPTIONS


class MistralCommand(_Conventions, TyperCommand):
    """A subcommand: its parameters follow click's conventions, with --verbose and --quiet; a closed stdout ends it
    quietly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        taken = {opt for param in self.params for opt in param.opts}
        self.params += [p for p in log_options() if not taken & set(p.opts)]


class MistralGroup(_Conventions, TyperGroup):
    """The root `mistral` command."""
