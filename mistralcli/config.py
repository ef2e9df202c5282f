"""The user config file: config.toml in the platformdirs config directory (`mistral config path`), with defaults
for the commands' flags. Precedence: a flag, then the environment (MISTRALCLI_<KEY>), then the file, then the
built-in default. The values reach the commands as click's default_map, so each is converted and checked as the
flag's own value would be."""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from mistralcli.errors import MistralError
from mistralcli.paths import APP_NAME


@dataclass(frozen=True)
class Key:
    type: type
    help: str
    param: str | None = None  # the commands' parameter it defaults (None: read where it is used)
    commands: tuple[str, ...] | None = None  # only these commands (None: every one with the parameter)
    many: bool = False  # a list (the parameter is repeatable)


KEYS: dict[str, Key] = {
    "model": Key(str, "the model of run, chat, serve, bench, ...", "model", many=False),
    "threads": Key(int, "CPU threads for the kernels", "threads"),
    "temperature": Key(float, "sampling temperature (0: greedy)", "temperature"),
    "top_p": Key(float, "nucleus sampling", "top_p"),
    "top_k": Key(int, "top-k sampling (0: off)", "top_k"),
    "min_p": Key(float, "min-p sampling", "min_p"),
    "repeat_penalty": Key(float, "repetition penalty", "repeat_penalty"),
    "max_tokens": Key(int, "most tokens generated", "max_tokens"),
    "seed": Key(int, "the random seed", "seed"),
    "system": Key(str, "the system message of run and chat", "system"),
    "host": Key(str, "the address mistral serve listens on", "host", ("serve",)),
    "port": Key(int, "the port mistral serve listens on", "port", ("serve",)),
    "api_keys_file": Key(str, "the file of API keys mistral serve accepts", "api_key_file", ("serve",), many=True),
    "mcp_config": Key(str, "the MCP servers' config file", "mcp_config"),
    "model_dirs": Key(str, "directories mistral models (and serve --models-dir) search", None, many=True),
}
NOT_DEFAULTED = {"model": ("quantize",)}  # quantize's --model is its input: never a default


def config_path() -> Path:
    override = os.environ.get("MISTRALCLI_CONFIG")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def env_name(key: str) -> str:
    return f"MISTRALCLI_{key.upper()}"


def read_file(path: Path | None = None) -> dict:
    """The config file's values, checked: one MistralError line naming the file, the key and the problem."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise MistralError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise MistralError(f"{path}: not valid TOML ({exc})") from None
    for key, value in data.items():
        if key not in KEYS:
            raise MistralError(f"{path}: unknown key {key!r} (known: {', '.join(KEYS)})")
        data[key] = _checked(key, value, f"{path}: {key}")
    return data


def _checked(key: str, value, where: str):
    spec = KEYS[key]
    if spec.many:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MistralError(f"{where}: must be a list of strings")
        return value
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.type) or isinstance(value, bool):
        raise MistralError(f"{where}: must be {_kind(spec.type)}, not {value!r}")
    return value


def _kind(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string"}[kind]


def parse_value(key: str, text: str):
    """`mistral config set KEY VALUE`'s VALUE as the key's type; ValueError names what is wrong."""
    if key not in KEYS:
        raise ValueError(f"unknown key {key!r} (known: {', '.join(KEYS)})")
    spec = KEYS[key]
    if spec.many:
        return [part for part in text.split(os.pathsep) if part] if text else []
    try:
        return spec.type(text)
    except ValueError:
        raise ValueError(f"{key} must be {_kind(spec.type)}, not {text!r}") from None


def effective() -> dict[str, tuple[object, str]]:
    """Each key set somewhere: (value, where: "env MISTRALCLI_X" or the file)."""
    out: dict[str, tuple[object, str]] = {}
    path = config_path()
    for key, value in read_file(path).items():
        out[key] = (value, str(path))
    for key in KEYS:
        text = os.environ.get(env_name(key))
        if text is None or text == "":
            continue
        try:
            value = parse_value(key, text)
        except ValueError as exc:
            raise MistralError(f"environment {env_name(key)}: {exc}") from None
        out[key] = (value, f"env {env_name(key)}")
    return out


def value(key: str, default=None):
    """A key's value from the environment or the file (for the keys no flag takes, such as model_dirs)."""
    found = effective().get(key)
    return found[0] if found is not None else default


def default_map(root) -> dict:
    """click's default_map for the root command: {command: {parameter: value}} for the keys set."""
    import typer.core

    values = effective()
    if not values:
        return {}

    def fill(command, path: tuple[str, ...], into: dict) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                fill(sub, (*path, name), into.setdefault(name, {}))
            return
        params = {p.name: p for p in command.params if isinstance(p, typer.core.TyperOption)}
        name = " ".join(path)
        for key, (found, _) in values.items():
            spec = KEYS[key]
            if spec.param is None or spec.param not in params:
                continue
            if (spec.commands is not None and name not in spec.commands) or name in NOT_DEFAULTED.get(key, ()):
                continue
            if params[spec.param].multiple:
                into[spec.param] = list(found) if isinstance(found, list) else [found]
            else:
                into[spec.param] = found[0] if isinstance(found, list) else found

    out: dict = {}
    fill(root, (), out)
    return {k: v for k, v in out.items() if v}


def write(updates: dict, removals: tuple[str, ...] = ()) -> Path:
    """Set and unset keys in the file, keeping its comments and layout (tomlkit)."""
    import tomlkit

    path = config_path()
    try:  # values of the wrong type may be mended here; a file that is not TOML is reported, not overwritten
        document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.is_file() else tomlkit.document()
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise MistralError(f"{path}: not valid TOML ({exc}); fix it by hand or remove it") from None
    for key, new in updates.items():
        document[key] = new
    for key in removals:
        if key in document:
            del document[key]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return path
