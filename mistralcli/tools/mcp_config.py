"""The MCP client's config file: mistral.rs's shape (`servers` with a typed `source`), so its users bring
theirs unchanged, and the Cursor/Claude Desktop shape (`mcpServers` keyed by name), read into the first.

A config that cannot be read is a MistralError of one line naming the file and the problem (for a wrong
shape, pydantic's location such as `servers.0.source.type`)."""

import json
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mistralcli.errors import MistralError
from mistralcli.paths import APP_NAME


class ProcessSource(BaseModel):
    """A server run as a child process, spoken to over its stdin/stdout."""

    type: Literal["Process"]
    command: str
    args: list[str] = []
    env: dict[str, str] = {}  # added to our environment, not replacing it
    work_dir: str | None = None


class HttpSource(BaseModel):
    """A server at a URL: streamable HTTP, with SSE as the fallback for servers that only speak that."""

    type: Literal["Http"]
    url: str
    headers: dict[str, str] = {}
    timeout_secs: float | None = Field(None, gt=0)


class WebSocketSource(BaseModel):
    type: Literal["WebSocket"]
    url: str
    headers: dict[str, str] = {}


Source = Annotated[ProcessSource | HttpSource | WebSocketSource, Field(discriminator="type")]


class ServerConfig(BaseModel):
    name: str
    source: Source
    id: str = ""  # defaults to the name
    tool_prefix: str | None = None  # tools register as <tool_prefix>_<tool>
    enabled: bool = True
    bearer_token: str | None = None  # sent as `Authorization: Bearer ...` to Http and WebSocket servers
    resources: list[str] | None = None  # accepted for mistral.rs compatibility; resources are not read

    def model_post_init(self, _context) -> None:
        self.id = self.id or self.name


class McpConfig(BaseModel):
    servers: list[ServerConfig] = []
    auto_register_tools: bool = True
    tool_timeout_secs: float = Field(30, gt=0)  # a call's limit, and a server's to start
    max_concurrent_calls: int = Field(10, ge=1)  # across all servers

    @property
    def enabled_servers(self) -> list[ServerConfig]:
        return [server for server in self.servers if server.enabled]


class CursorServer(BaseModel):
    """One entry of Cursor's and Claude Desktop's `mcpServers`: a command, or a URL."""

    model_config = ConfigDict(extra="ignore")  # their files carry fields of their own ("type", ...)

    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    url: str | None = None
    headers: dict[str, str] = {}
    disabled: bool = False

    def server(self, name: str) -> ServerConfig:
        if self.command is not None:
            source = ProcessSource(type="Process", command=self.command, args=self.args, env=self.env)
        elif self.url is not None:
            source = HttpSource(type="Http", url=self.url, headers=self.headers)
        else:
            raise ValueError("needs a command or a url")
        return ServerConfig(name=name, source=source, enabled=not self.disabled)


class CursorConfig(BaseModel):
    mcpServers: dict[str, CursorServer]  # their name


def default_config_path() -> Path:
    """`mcp.json` in the user config directory (platformdirs)."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "mcp.json"


def load_config(path: Path | None = None) -> McpConfig:
    """The config in path; with no path, the default file, or no servers when it does not exist.

    Raises:
        MistralError: the file is missing (when named), not JSON, or not a config of either shape.
    """
    if path is None:
        path = default_config_path()
        if not path.is_file():
            return McpConfig()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MistralError(f"{path}: no such MCP config file") from None
    except OSError as exc:
        raise MistralError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise MistralError(f"{path}: not JSON ({exc})") from None
    try:
        return parse_config(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"])) or "the config"
        raise MistralError(f"{path}: {where}: {error['msg']}") from None
    except ValueError as exc:
        raise MistralError(f"{path}: {exc}") from None


def parse_config(data) -> McpConfig:
    """A config from its JSON value, in either shape; pydantic's ValidationError for a wrong one."""
    if isinstance(data, dict) and "mcpServers" in data:
        cursor = CursorConfig.model_validate(data)
        servers = []
        for name, entry in cursor.mcpServers.items():
            try:
                servers.append(entry.server(name))
            except ValueError as exc:
                raise ValueError(f"mcpServers.{name}: {exc}") from None
        return McpConfig(servers=servers)
    return McpConfig.model_validate(data)
