"""`mistral mcp-server`: the model as an MCP server over stdio (its `chat` and `complete` tools), for other
agents and desktop clients. stdout is the protocol's; the loading message goes to stderr."""

from contextlib import nullcontext

import typer

from mistralcli.commands._common import model_option, stderr_console


def mcp_server(
    model: str = model_option(),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for the kernels."),
):
    """Serve the model as an MCP server over stdio, with a `chat` and a `complete` tool.

    Example (an MCP client's config): {"mcpServers": {"local": {"command": "mistral", "args": ["mcp-server"]}}}
    """
    from mistralcli import LLM
    from mistralcli.tools.mcp_server import build_server

    console = stderr_console()
    with console.status("Loading model…", spinner="dots") if console.is_terminal else nullcontext():
        llm = LLM(model, threads=threads, max_num_seqs=4)
    build_server(llm).run(transport="stdio")
