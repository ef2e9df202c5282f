"""`mistral run`: one-shot generation for the shell (stdout is the answer and nothing else)."""

import dataclasses
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import typer

from mistralcli.commands._common import (
    ISQ_HELP,
    REPLACE_INVALID_HELP,
    check_isq,
    kv_cache_dtype_option,
    load_with_status,
    model_option,
    read_text_argument,
    stderr_console,
    write_stdout,
)
from mistralcli.commands._structured import structured_option

SAMPLING_HELP = "Default: the model's recommended value, else {}."


def run(
    prompt: str = typer.Argument(None, help="The prompt, or '-' to read it from stdin.", show_default=False),
    model: str = model_option(),
    system: str = typer.Option(None, "--system", "-s", help="System message (ignored with --raw)."),
    max_tokens: int = typer.Option(1024, "--max-tokens", "-n", min=1, help="Most tokens to generate."),
    temperature: float = typer.Option(
        None, "--temperature", "-t", min=0.0, help=SAMPLING_HELP.format("0.8; 0 means greedy")
    ),
    top_p: float = typer.Option(None, "--top-p", min=0.0, max=1.0, help=SAMPLING_HELP.format("0.95")),
    top_k: int = typer.Option(None, "--top-k", min=0, help=SAMPLING_HELP.format("40; 0 disables it")),
    min_p: float = typer.Option(None, "--min-p", min=0.0, max=1.0, help=SAMPLING_HELP.format("0.05")),
    repeat_penalty: float = typer.Option(None, "--repeat-penalty", min=0.0, help=SAMPLING_HELP.format("1.0, off")),
    typical_p: float = typer.Option(None, "--typical-p", min=0.0, max=1.0, help=SAMPLING_HELP.format("1.0, off")),
    dry_multiplier: float = typer.Option(
        None, "--dry-multiplier", min=0.0, help="DRY repetition penalty strength (0 = off; 0.8 is a usual choice)."
    ),
    stop: list[str] = typer.Option(None, "--stop", help="Stop before this text (repeat the flag for several)."),
    ignore_eos: bool = typer.Option(False, "--ignore-eos", help="Keep going past the model's end-of-text token."),
    seed: int = typer.Option(None, "--seed", help="Random seed: the same seed gives the same answer."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for the kernels."),
    isq: str = typer.Option(None, "--isq", help=ISQ_HELP, show_default=False),
    raw: bool = typer.Option(
        False,
        "--raw",
        help="Send the prompt as is, without the chat template (whitespace is text then; only an empty prompt "
        "is refused).",
    ),
    json_schema: str = typer.Option(
        None,
        "--json-schema",
        help="Constrain the answer to this JSON schema: a file, or the schema itself ({...}).",
        show_default=False,
    ),
    json_object: bool = typer.Option(False, "--json-object", help="Constrain the answer to a JSON object."),
    regex: str = typer.Option(None, "--regex", help="Constrain the answer to match this regular expression."),
    grammar: Path = typer.Option(
        None, "--grammar", help="Constrain the answer to this grammar file (Lark, or GBNF as llama.cpp writes it)."
    ),
    think: bool = typer.Option(
        None,
        "--think/--no-think",
        help="A thinking model (Qwen3, ...): turn its thinking on or off (enable_thinking). Default: its template's.",
        show_default=False,
    ),
    thinking_budget: int = typer.Option(
        None, "--thinking-budget", min=0, help="A thinking model's thought ends after this many tokens."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object with text (and a thinking model's reasoning), usage and timings."
    ),
    replace_invalid: bool = typer.Option(False, "--replace-invalid", help=REPLACE_INVALID_HELP.format("PROMPT")),
    batch: Path = typer.Option(
        None,
        "--batch",
        help="Answer every request of this JSONL file (OpenAI's batch input: custom_id, method, url, body; '-': "
        "stdin) through the batched engine, in OpenAI's batch output format.",
        show_default=False,
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="With --batch: write the results here (a rerun skips the custom_ids already in it). Default: stdout.",
        show_default=False,
    ),
    each_line: bool = typer.Option(
        False, "--each-line", help="With --batch: the file holds plain prompts, one a line (custom_id line-N)."
    ),
    concurrency: int = typer.Option(16, "--concurrency", min=1, help="With --batch: most requests computed at once."),
    kv_cache_dtype: str = kv_cache_dtype_option(),
):
    """Generate an answer to PROMPT and print it.

    Example: mistral run "What is the capital of France?"   |   echo "Summarize: ..." | mistral run -

    Structured: mistral run --json-schema person.json "A person"   (stdout is then exactly the constrained text,
    and the exit status is 1 if it ended, at --max-tokens, before the constraint was complete)

    A thinking model's thought goes to stderr (dimmed, on a terminal) and its answer to stdout.

    A batch: mistral run --batch requests.jsonl -o results.jsonl   |   mistral run --batch prompts.txt --each-line
    """
    if batch is None:
        for value, flag in ((output, "--output"), (each_line, "--each-line")):
            if value:
                raise typer.BadParameter("it needs --batch", param_hint=flag)
    else:
        _batch(batch, output, each_line, concurrency, prompt, locals())
        return
    text = read_text_argument(prompt, replace_invalid=replace_invalid)
    if not (text if raw else text.strip()):
        problem = "it is empty" if not text else "it is only whitespace (--raw sends whitespace as is)"
        raise typer.BadParameter(problem, param_hint="PROMPT")
    given = dict(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repeat_penalty,
        typical_p=typical_p,
        dry_multiplier=dry_multiplier,
        stop=stop or None,
        ignore_eos=ignore_eos or None,
    )
    given = {k: v for k, v in given.items() if v is not None}
    structured = structured_option(json_schema, json_object, regex, grammar)

    from mistralcli.generation import GenerationStats, generate
    from mistralcli.prompt import encode_prompt, render_chat
    from mistralcli.reasoning import Thinking
    from mistralcli.sampling import SamplingParams

    console = stderr_console()
    try:
        SamplingParams(**given)  # a bad value is a usage error before any loading
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    check_isq(isq)
    start = time.perf_counter()
    loaded = load_with_status(console, model, threads, isq)
    load_s = time.perf_counter() - start
    try:
        params = SamplingParams(**{**loaded.sampling_defaults, **given}, seed=seed)
    except ValueError as exc:
        console.print(f"warning: ignoring the model's recommended sampling settings ({exc})", soft_wrap=True)
        params = SamplingParams(**given, seed=seed)
    if structured is not None:
        params = dataclasses.replace(params, structured=structured)

    tokenizer = loaded.tokenizer
    thinking = None
    if raw or loaded.chat_template is None:
        prompt_ids = encode_prompt(tokenizer, text)
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        kwargs = {"enable_thinking": think} if think is not None else None
        rendered = render_chat(loaded.chat_template, messages, template_kwargs=kwargs)
        prompt_ids = encode_prompt(tokenizer, rendered)
        thinking = Thinking.of(loaded.chat_template.source, rendered)
    if thinking_budget is not None:
        if thinking is None:
            raise typer.BadParameter(f"{loaded.name} does not think (its chat template has no thought)")
        params = dataclasses.replace(params, thinking_budget=thinking.budget(tokenizer, thinking_budget))
    if thinking is not None and params.structured is not None:
        params = dataclasses.replace(params, structured=thinking.constrain(params.structured, tokenizer))

    room = loaded.context_length - len(prompt_ids)
    if 0 < room < max_tokens:
        console.print(
            f"warning: --max-tokens {max_tokens} is more than the context leaves ({room} of its "
            f"{loaded.context_length} tokens after the {len(prompt_ids)}-token prompt): generating at most {room}",
            soft_wrap=True,
        )
        max_tokens = room

    stats = GenerationStats()
    pieces, thought = [], []
    splitter = thinking.new_parser() if thinking is not None else None
    show_thought = console.is_terminal and not as_json

    def emit(reasoning: str, piece: str) -> None:
        thought.append(reasoning)
        if reasoning and show_thought:
            console.print(reasoning, style="dim", end="", soft_wrap=True, markup=False, highlight=False)
        pieces.append(piece)
        if stream and piece:
            write_stdout(piece)

    stream = not as_json
    # A terminal that sees no streamed text (--json, or stdout redirected) sees progress instead.
    show_progress = console.is_terminal and not (stream and sys.stdout.isatty())
    with GenerationProgress(console, max_tokens) if show_progress else nullcontext() as progress:
        # a closed stdout (`| head`) ends the command quietly (MistralCommand), and generate frees the request
        generated = generate(
            loaded.model,
            tokenizer,
            prompt_ids,
            params,
            max_tokens,
            loaded.context_length,
            stats,
            kv_cache_dtype=kv_cache_dtype,
        )
        for piece in generated:
            reasoning, piece = splitter.feed(piece) if splitter is not None else ("", piece)
            emit(reasoning, piece)
            if progress is not None:
                progress.update(stats.completion_tokens)
        if splitter is not None:
            emit(*splitter.finish())
    answer = "".join(pieces)
    if as_json:
        write_stdout(
            json.dumps(
                {
                    "text": answer,
                    **({"reasoning": "".join(thought) if splitter.has_thought else None} if splitter else {}),
                    "finish_reason": stats.finish_reason,
                    **({"grammar_complete": stats.grammar_complete} if structured is not None else {}),
                    "model": loaded.name,
                    "usage": {
                        "prompt_tokens": stats.prompt_tokens,
                        "completion_tokens": stats.completion_tokens,
                        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
                    },
                    "timings": {
                        "load_s": round(load_s, 4),
                        "prompt_s": round(stats.prompt_s, 4),
                        "generation_s": round(stats.generation_s, 4),
                        "prompt_tok_s": round(stats.prompt_tok_s, 2),
                        "generation_tok_s": round(stats.generation_tok_s, 2),
                    },
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    else:
        # a constrained answer is exactly its text on a pipe (`| jq`); a terminal gets its line ended
        end = structured is None or sys.stdout.isatty()
        write_stdout("" if answer.endswith("\n") or not end else "\n")
        if console.is_terminal:
            console.print(
                f"[dim]{stats.completion_tokens} tokens, {stats.generation_tok_s:.1f} tok/s "
                f"(prompt {stats.prompt_tokens} tokens, {stats.prompt_tok_s:.1f} tok/s)[/dim]"
            )

    if stats.grammar_complete is False:
        console.print(
            f"error: the answer ended ({stats.finish_reason}: --max-tokens {max_tokens}) before it completed "
            f"the {structured.kind.replace('_', ' ')} constraint",
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _batch(source, output, each_line, concurrency, prompt, flags: dict) -> None:
    from mistralcli.commands._batch import run_batch_command

    if prompt is not None:
        raise typer.BadParameter("give the prompts in the --batch file, not as an argument", param_hint="PROMPT")
    for name in ("json_schema", "json_object", "regex", "grammar", "thinking_budget", "think", "as_json"):
        if flags[name]:
            flag = "--json" if name == "as_json" else "--" + name.replace("_", "-")
            raise typer.BadParameter(
                "not with --batch: its lines say it (response_format, chat_template_kwargs, ...)", param_hint=flag
            )
    check_isq(flags["isq"])
    names = {"repeat_penalty": "repetition_penalty"}
    given = {
        names.get(k, k): flags[k]
        for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "typical_p", "dry_multiplier", "stop")
        if flags[k] is not None and flags[k] != []
    }
    if flags["ignore_eos"]:
        given["ignore_eos"] = True
    options = {k: flags[k] for k in ("model", "threads", "isq", "max_tokens", "seed", "system", "raw")}
    run_batch_command(stderr_console(), source, output, each_line, concurrency, given, options)


class GenerationProgress:
    """Tokens generated so far as a rich progress bar on stderr, shown once a generation has run a second
    (a short one shows nothing), gone when it ends."""

    def __init__(self, console, total: int):
        self.console = console
        self.total = total
        self.start = time.perf_counter()
        self._progress = None

    def __enter__(self):
        return self

    def update(self, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        if self._progress is None:
            if elapsed < 1.0:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("Generating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("tokens, {task.fields[rate]} tok/s"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._task = self._progress.add_task("generate", total=self.total, rate="…")
            self._progress.start()
        self._progress.update(self._task, completed=done, rate=f"{done / elapsed:.1f}")

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
