"""`mistral chat`'s input and output: lines from a person at a terminal (prompt_toolkit: line editing, history
kept across runs, Alt+Enter for a new line, a paste kept whole) or from a script's stdin; answers shown as
they stream, as Markdown on a colour terminal (rich), as plain text otherwise (a pipe, NO_COLOR)."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator

FENCE = '"""'


def is_open_block(text: str) -> bool:
    """Whether text opens a triple-quote block that it does not close."""
    text = text.strip()
    return text.startswith(FENCE) and (len(text) < 2 * len(FENCE) or not text.endswith(FENCE))


def blocks(first: str, more: Callable[[], str | None]) -> str | None:
    """A turn from its first line: a line opening with \"\"\" takes the lines after it up to one ending with
    \"\"\" (more() gives the next line, None at the end of input); any other line is a turn as it is."""
    if not first.lstrip().startswith(FENCE):
        return first
    text = first.lstrip()[len(FENCE) :]
    if text.rstrip().endswith(FENCE):  # """one line""", or a block typed whole
        return text.rstrip()[: -len(FENCE)].strip("\n")
    lines = [text] if text else []
    while (line := more()) is not None:
        if line.rstrip().endswith(FENCE):
            lines.append(line.rstrip()[: -len(FENCE)])
            break
        lines.append(line)
    return "\n".join(lines).strip("\n")


class ScriptInput:
    """stdin that is not a terminal: each line a turn (\"\"\" blocks too), empty lines skipped."""

    interactive = False

    def __init__(self, stream=None):
        self.stream = stream or sys.stdin

    def _line(self) -> str | None:
        line = self.stream.readline()
        return line.rstrip("\r\n") if line else None

    def turns(self) -> Iterator[str]:
        while (line := self._line()) is not None:
            text = blocks(line, self._line)
            if text is not None and text.strip():
                yield text

    def confirm(self, question: str) -> str | None:
        return None  # nobody to ask


class TerminalInput:
    """A person at a terminal: prompt_toolkit with the history file, slash commands completed."""

    interactive = True

    def __init__(self, history_path, commands: list[str]):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import Completer, Completion
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        class SlashCompleter(Completer):
            def get_completions(self, document, complete_event):
                text = document.text_before_cursor
                if text.startswith("/") and " " not in text:
                    for name in commands:
                        if name.startswith(text):
                            yield Completion(name, start_position=-len(text))

        keys = KeyBindings()

        @keys.add("escape", "enter")  # Alt+Enter (or Esc, then Enter): a new line in the turn
        def _newline(event):
            event.current_buffer.insert_text("\n")

        @keys.add("enter")  # inside an open """ block, a new line; else the turn is sent
        def _enter(event):
            buffer = event.current_buffer
            if is_open_block(buffer.text) and buffer.cursor_position == len(buffer.text):
                buffer.insert_text("\n")
            else:
                buffer.validate_and_handle()

        history_path.parent.mkdir(parents=True, exist_ok=True)
        self.session = PromptSession(
            history=FileHistory(str(history_path)),
            completer=SlashCompleter(),
            complete_while_typing=False,
            key_bindings=keys,
            enable_open_in_editor=False,
            prompt_continuation="... ",
        )

    def turns(self) -> Iterator[str]:
        """A triple-quote block is typed in one prompt (Enter gives new lines until it is closed), so it is one
        entry of the history, recalled whole."""
        while True:
            try:
                text = self.session.prompt(">>> ")
            except KeyboardInterrupt:  # Ctrl-C at the prompt clears the line (or the block)
                continue
            except EOFError:  # Ctrl-D
                return
            text = blocks(text, lambda: None)
            if text is not None and text.strip():
                yield text

    def confirm(self, question: str) -> str | None:
        """An answer typed at the terminal (not kept in the history); Ctrl-C or Ctrl-D is a no."""
        from prompt_toolkit import prompt

        try:
            return prompt(question).strip().lower()
        except (KeyboardInterrupt, EOFError):
            return "n"


def clipboard_copy(text: str) -> str:
    """Put text on the clipboard: the desktop's tool where one is installed, else the terminal's (OSC 52,
    which most terminals and tmux honour); says where it went, or raises OSError."""
    tools = [
        ["pbcopy"],
        ["wl-copy"],
        ["xclip", "-selection", "clipboard"],
        ["xsel", "--clipboard", "--input"],
        ["clip.exe"],
    ]
    for command in tools:
        if shutil.which(command[0]) and (command[0] in ("pbcopy", "clip.exe") or _has_display(command[0])):
            subprocess.run(command, input=text.encode("utf-8"), check=True, timeout=5)
            return command[0]
    if sys.stdout.isatty():
        import base64

        sys.stdout.write(f"\033]52;c;{base64.b64encode(text.encode('utf-8')).decode('ascii')}\a")
        sys.stdout.flush()
        return "the terminal (OSC 52)"
    raise OSError("no clipboard here (no pbcopy, wl-copy, xclip or xsel, and stdout is not a terminal)")


def _has_display(tool: str) -> bool:
    return bool(os.environ.get("WAYLAND_DISPLAY" if tool == "wl-copy" else "DISPLAY"))


class AnswerView:
    """One answer on its way to the screen. On a colour terminal a rich Live view of its end, re-rendered as
    Markdown as it grows (a thinking model's thought dimmed above), then the whole answer printed once it
    settles (a Live view cannot redraw lines that scrolled away); else the text written as it comes, the
    thought to stderr."""

    def __init__(self, out, err, markdown: bool):
        self.out, self.err = out, err
        self.content, self.reasoning = "", ""
        self._live = None
        if markdown:
            from rich.live import Live

            self._live = Live(_Tail(self), console=out, refresh_per_second=10, transient=True)
            self._live.start()
        self._ended_line = True

    def renderable(self):
        from rich.console import Group
        from rich.markdown import Markdown
        from rich.text import Text

        parts = [Text(self.reasoning.strip("\n"), style="dim")] if self.reasoning.strip() else []
        return Group(*parts, Markdown(self.content))

    def add(self, pieces: list[tuple[str, str]]) -> None:
        reasoning = "".join(r for r, _ in pieces)
        content = "".join(c for _, c in pieces)
        self.reasoning += reasoning
        self.content += content
        if self._live is not None:
            return  # the Live view renders it at its next refresh
        if reasoning:
            self.err.print(reasoning, style="dim", end="", soft_wrap=True, markup=False, highlight=False)
        if content:
            self.out.file.write(content)
            self.out.file.flush()
            self._ended_line = content.endswith("\n")

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self.out.print(self.renderable(), soft_wrap=False)
        elif not self._ended_line:
            self.out.file.write("\n")
            self.out.file.flush()


class _Tail:
    """The last screenful of an answer as it renders (the Live view's content)."""

    def __init__(self, view: AnswerView):
        self.view = view

    def __rich_console__(self, console, options):
        from rich.segment import Segment

        lines = console.render_lines(self.view.renderable(), options.update(height=None), pad=False)
        for line in lines[-max(1, console.size.height - 2) :]:
            yield from line
            yield Segment.line()
