"""Tool calling: the parsers that find a model's tool calls in its output as it is decoded, registered by
format (`TOOL_CALL_PARSERS`, chosen from the chat template by `parser_for_template`), and the grammars that
force calls in that format.

events.py: what a parser gives; base.py: the reading every format shares; parsers.py: the formats;
grammars.py: their Lark grammars."""

from mistralcli.tools.base import ToolCallParser
from mistralcli.tools.events import ContentDelta, ParsedEnd, ToolCallDelta, ToolCallParseError
from mistralcli.tools.parsers import TOOL_CALL_PARSERS, parser_for_template

__all__ = [
    "TOOL_CALL_PARSERS",
    "ContentDelta",
    "ParsedEnd",
    "ToolCallDelta",
    "ToolCallParseError",
    "ToolCallParser",
    "parser_for_template",
]
