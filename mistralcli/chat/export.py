"""A session written out: Markdown (a heading per message, for reading) or JSON (everything the store keeps),
chosen by the file's extension."""

import json
import time
from dataclasses import asdict
from pathlib import Path

from mistralcli.chat.store import Session
from mistralcli.errors import MistralError

FORMATS = {".md": "markdown", ".markdown": "markdown", ".json": "json"}


def session_json(session: Session) -> dict:
    body = asdict(session)
    body.pop("id")
    for message in body["messages"]:
        message.pop("id")
    return body


def session_markdown(session: Session) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.created))
    lines = [f"# {session.name}", "", f"{when}" + (f", {session.model}" if session.model else ""), ""]
    if session.system:
        lines += ["## System", "", session.system, ""]
    for m in session.messages:
        title = {"user": "You", "assistant": "Assistant", "tool": "Tool"}.get(m.role, m.role.title())
        lines += [f"## {title}" + (" (cut short)" if m.partial else ""), ""]
        if m.content:
            lines += [m.content, ""]
        for call in m.tool_calls or []:
            function = call.get("function", {})
            lines += [f"`{function.get('name')}({function.get('arguments', '')})`", ""]
    return "\n".join(lines)


def export_session(session: Session, path: Path | str) -> str:
    """Write the session to path (.md, .markdown or .json); returns the format written."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise MistralError(f"{path}: export to a .md or a .json file")
    text = session_markdown(session) if kind == "markdown" else json.dumps(session_json(session), indent=2) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MistralError(f"{path}: cannot write it ({exc.strerror})") from None
    return kind
