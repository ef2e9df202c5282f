"""Helpers the commands share: reading a prompt argument, the model option, stderr console, stdout."""

import os
import sys

import typer

MODEL_HELP = "GGUF file, model directory, or Hugging Face repo id (org/name or org/name/file.gguf). Default: SmolLM2-135M-Instruct Q4_1."  # noqa: E501
REPLACE_INVALID_HELP = "Replace bytes that are not UTF-8 in {} with U+FFFD instead of refusing them."


def complete_model(incomplete: str) -> list[str]:
    """Shell completion of --model: the names `mistral models` lists (and paths, as the shell completes them)."""
    try:
        from mistralcli.loading.discovery import discover

        return [m.name for m in discover() if m.name.startswith(incomplete) and m.source != "default"]
    except Exception:  # a completion never fails loudly
        return []


def model_option(help: str = MODEL_HELP):
    """The --model/-m option of the commands that load a model, completing from `mistral models`."""
    return typer.Option(None, "--model", "-m", help=help, show_default=False, autocompletion=complete_model)


def kv_cache_dtype_option():
    """--kv-cache-dtype: what the paged KV cache stores (EngineConfig.kv_cache_dtype)."""

    def check(value: str) -> str:
        from mistralcli.engine.paged_cache import KV_CACHE_DTYPES

        if value not in KV_CACHE_DTYPES:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(KV_CACHE_DTYPES)}")
        return value

    return typer.Option(
        "f32",
        "--kv-cache-dtype",
        callback=check,
        help="What the KV cache stores: f32 or f16. f16 holds twice the tokens in the same memory and speeds up "
        "batched decoding at long contexts, at a cost in fidelity (top-5 logits drift up to 0.023 from float32, "
        "against 0.002 with f32: README, Serving).",
    )


def read_text_argument(text: str | None, name: str = "PROMPT", replace_invalid: bool = False) -> str:
    """The argument, or stdin when it is '-'; a usage error when neither is given, or when the text is
    not UTF-8 (unless replace_invalid: then each invalid byte becomes U+FFFD)."""
    if text == "-":
        if sys.stdin.isatty():
            print(f"Reading {name} from stdin until Ctrl-D…", file=sys.stderr, flush=True)
        data = sys.stdin.buffer.read()
        # as sys.stdin.read() would: universal newlines
        return _decode_utf8(data, name, replace_invalid).replace("\r\n", "\n").replace("\r", "\n")
    if text is None:
        raise typer.BadParameter(f"give {name} as an argument, or '-' to read it from stdin", param_hint=name)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # bytes of argv that are not UTF-8 arrive as lone surrogates (PEP 383): back to those bytes
        return _decode_utf8(text.encode("utf-8", "surrogateescape"), name, replace_invalid)


def _decode_utf8(data: bytes, name: str, replace_invalid: bool) -> str:
    try:
        return data.decode("utf-8", errors="replace" if replace_invalid else "strict")
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(
            f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            "(--replace-invalid replaces such bytes with U+FFFD)",
            param_hint=name,
        ) from None


def write_stdout(text: str) -> None:
    """Write and flush (a reader that has gone, `| head`, raises BrokenPipeError here, which every
    command's invoke turns into a quiet exit 0: see _command.MistralCommand)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing written later (at exit, say) meets the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


QUIET = False  # --quiet: progress and notes are not shown (see _command.log_options)


def stderr_console():
    """stderr as a rich Console (no colour with NO_COLOR); under --quiet it shows errors and warnings only, and no
    spinner or progress bar."""
    from rich.console import Console

    if not QUIET:
        return Console(stderr=True, no_color="NO_COLOR" in os.environ)

    class QuietConsole(Console):
        @property
        def is_terminal(self) -> bool:  # no spinners, bars or live displays
            return False

        def print(self, *objects, **kwargs):
            text = str(objects[0]) if objects else ""
            if text.lstrip("[").lower().startswith(("error", "warning", "red]error", "yellow]warning")):
                super().print(*objects, **kwargs)

    return QuietConsole(stderr=True, no_color="NO_COLOR" in os.environ)


ISQ_HELP = "Quantize the weights to this type as they load (in-situ, as mistral quantize's --type: Q4_K_M, Q8_0, ...)."


def check_isq(isq: str | None) -> None:
    """A bad --isq is a usage error before anything loads."""
    if isq is None:
        return
    from mistralcli.errors import MistralError
    from mistralcli.quantize.policy import mix_named

    try:
        mix_named(isq, "--isq")
    except MistralError as exc:
        raise typer.BadParameter(str(exc), param_hint="--isq") from None


def load_with_status(console, model: str | None, threads: int | None = None, isq: str | None = None):
    """load_model with a spinner on a terminal, or with --isq a bar per tensor quantized."""
    from contextlib import nullcontext

    from mistralcli.loading.loader import load_model

    if isq is None or not console.is_terminal:
        with console.status("Loading model…", spinner="dots") if console.is_terminal else nullcontext():
            return load_model(model, threads=threads, isq=isq)
    with TensorProgress(console, f"Quantizing to {isq.upper()}") as advance:
        return load_model(model, threads=threads, isq=isq, progress=advance)


class TensorProgress:
    """A rich bar per tensor on a terminal (nothing elsewhere); the callback takes (plan, done, total)."""

    def __init__(self, console, label: str, total: int | None = None):
        self.console, self.label, self.total = console, label, total

    def __enter__(self):
        if not self.console.is_terminal:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[name]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("q", total=self.total, name="")
        self.bar.start()
        return self.advance

    def advance(self, plan, done: int | None = None, total: int | None = None) -> None:
        if total is not None:
            self.bar.update(self.task, total=total, completed=done, name=plan.name)
        else:
            self.bar.update(self.task, advance=1, name=plan.name)

    def __exit__(self, *exc):
        if self.console.is_terminal:
            self.bar.stop()


def read_text_file(path, param_hint: str = "--file") -> str:
    """A required text file's contents; a usage error naming it when it is missing or not UTF-8."""
    if path is None:
        raise typer.BadParameter("it is required", param_hint=param_hint)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{path}: cannot read it as UTF-8 text ({exc})", param_hint=param_hint) from None


def window_reporter(console, as_json: bool):
    """Perplexity's running figure after each window, on stderr (under --json only on a terminal)."""

    def report(done, total, ppl):
        if console.is_terminal or not as_json:
            console.print(f"[{done}/{total}] {ppl:.4f}", highlight=False)

    return report
