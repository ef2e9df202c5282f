"""A small MCP server for the MCP client's tests, written with the SDK's FastMCP.

Run: `python toolbox.py stdio` or `python toolbox.py http PORT` (streamable HTTP on 127.0.0.1:PORT/mcp)."""

import asyncio
import os
import struct
import sys
import zlib

from mcp.server.fastmcp import FastMCP, Image


def _png() -> bytes:
    """A 1x1 black PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")


def build(port: int = 0) -> FastMCP:
    mcp = FastMCP("toolbox", host="127.0.0.1", port=port, log_level="WARNING")

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool()
    async def sleep(seconds: float) -> str:
        """Sleep, then say so."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @mcp.tool()
    def fail(message: str) -> str:
        """Always fail with the message."""
        raise ValueError(message)

    @mcp.tool()
    def image() -> Image:
        """A 1x1 PNG."""
        return Image(data=_png(), format="png")

    @mcp.tool()
    def stats(values: list[float]) -> dict:
        """The count and sum of the values (structured content)."""
        return {"count": len(values), "sum": sum(values)}

    @mcp.tool()
    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    return mcp


if __name__ == "__main__":
    if sys.argv[1] == "http":
        build(int(sys.argv[2])).run(transport="streamable-http")
    else:
        build().run(transport="stdio")
