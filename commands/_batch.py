"""`mistral run --batch`: the command's side of mistralcli/batch.py (reading, the in-process server, progress,
the output file in input order)."""

import asyncio
import dataclasses
import sys
from pathlib import Path

import typer

from mistralcli.commands._common import load_with_status, write_stdout


def run_batch_command(
    console, source: Path, output: Path | None, each_line: bool, concurrency: int, given: dict, options: dict
) -> None:
    """given: the sampling flags given (SamplingParams names); options: model, threads, isq, max_tokens, seed,
    system, raw."""
    from mistralcli.batch import done_ids, read_lines, run_batch

    if str(source) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"{source}: cannot read it as UTF-8 text ({exc})", param_hint="--batch") from None
    if output is not None and output.exists() and output.is_dir():
        raise typer.BadParameter(f"{output}: is a directory", param_hint="--output")

    loaded = load_with_status(console, options["model"], options["threads"], options["isq"])
    defaults = _request_defaults(loaded, given, options)
    lines = read_lines(text, each_line, defaults, raw=options["raw"])
    if not lines:
        raise typer.BadParameter(f"{source}: no requests in it", param_hint="--batch")
    finished = done_ids(output)
    first = {}  # custom_id -> the line that owns it (a later duplicate is an error line of its own)
    for line in lines:
        first.setdefault(line.custom_id, line.number)
    kept = {
        line.number: finished[line.custom_id]
        for line in lines
        if first[line.custom_id] == line.number and line.custom_id in finished
    }
    todo = [line for line in lines if line.number not in kept]
    skipped = len(kept)
    if skipped:
        console.print(f"resuming: {skipped} of {len(lines)} already answered in {output}", highlight=False)
    app, key = _server(loaded, concurrency, options.get("kv_cache_dtype", "f32"))
    results: dict[int, str] = {}  # by line number
    appended = output.open("a", encoding="utf-8") if output is not None else None
    order = [line.number for line in lines]
    shown = {"next": 0}

    def write(line, text: str) -> None:
        results[line.number] = text
        if appended is not None:
            appended.write(text + "\n")
            appended.flush()
            return
        while shown["next"] < len(order):  # stdout: in input order, as soon as the next one is in
            number = order[shown["next"]]
            if number not in results:
                break
            write_stdout(results[number] + "\n")
            shown["next"] += 1

    with _Progress(console, len(todo)) as progress:
        report = asyncio.run(run_batch(app, todo, key, concurrency, write, progress.update))
    if appended is not None:
        appended.close()
        merged = {**kept, **results}
        output.write_text("".join(merged[n] + "\n" for n in order if n in merged), encoding="utf-8")
    if not todo:
        console.print(f"nothing to do: all {len(lines)} requests are answered in {output}", highlight=False)
        return
    rate = report.completion_tokens / report.seconds if report.seconds else 0.0
    console.print(
        f"{len(todo)} requests in {report.seconds:.1f} s: {report.answered} answered, {report.failed} failed"
        + (f", {skipped} skipped (already answered)" if skipped else "")
        + f"; {report.completion_tokens} tokens generated, {rate:.1f} tok/s",
        highlight=False,
        markup=False,
    )
    for error in report.errors[:10]:
        console.print(f"  {error}", highlight=False, markup=False, soft_wrap=True)
    if len(report.errors) > 10:
        console.print(f"  ... and {len(report.errors) - 10} more (see the output)", highlight=False)
    if report.failed:
        raise typer.Exit(1)


def _request_defaults(loaded, given: dict, options: dict) -> dict:
    """What each --each-line request carries: `mistral run`'s sampling (the flags, the model's recommended, the
    built-in defaults) in the server's field names, max_tokens, seed and system."""
    from mistralcli.sampling import SamplingParams

    try:
        params = SamplingParams(**{**loaded.sampling_defaults, **given})
    except ValueError:
        params = SamplingParams(**given)
    out = {k: getattr(params, k) for k in ("temperature", "top_p", "top_k", "min_p")}
    for ours in ("repetition_penalty", "typical_p", "dry_multiplier", "stop", "ignore_eos"):
        if ours in given:
            out[ours] = list(given[ours]) if ours == "stop" else given[ours]
    out["max_tokens"] = options["max_tokens"]
    if options.get("seed") is not None:
        out["seed"] = options["seed"]
    if options.get("system"):
        out["system"] = options["system"]
    return out


def _server(loaded, concurrency: int, kv_cache_dtype: str = "f32"):
    from mistralcli.batch import new_api_key
    from mistralcli.engine.engine import EngineConfig
    from mistralcli.server.app import ServerSettings, ServerShared, serve_models
    from mistralcli.server.limits import ApiKeys
    from mistralcli.server.model_manager import serving_parts

    key = new_api_key()
    settings = ServerSettings(
        model_name=loaded.name, api_keys=ApiKeys([key], None), access_log=None, max_body_bytes=64 << 20
    )
    shared = ServerShared(settings)
    config = EngineConfig(max_num_seqs=concurrency, max_num_batched_tokens=512, kv_cache_dtype=kv_cache_dtype)
    engine, fields = serving_parts(loaded, config)
    state = shared.model_state(engine, dataclasses.replace(settings, **fields))
    shared.models.add(loaded.name, state=state, path=str(loaded.path))
    return serve_models(shared), key


class _Progress:
    """Requests answered, and tokens per second, as a rich bar on stderr (a terminal only)."""

    def __init__(self, console, total: int):
        self.console, self.total, self.bar = console, total, None

    def __enter__(self):
        if self.console.is_terminal and self.total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("Batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} tok/s, {task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task("batch", total=self.total, rate="…", failed=0)
            self.bar.start()
        return self

    def update(self, report) -> None:
        if self.bar is not None:
            rate = f"{report.completion_tokens / report.seconds:.1f}" if report.seconds else "…"
            done = report.answered + report.failed
            self.bar.update(self.task, completed=done, rate=rate, failed=report.failed)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
