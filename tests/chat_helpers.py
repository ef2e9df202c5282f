"""Running `mistral chat` as a user does, in a subprocess with a store of its own (MISTRALCLI_DATA), and a
scripted OpenAI-compatible server for it to talk to (`--url`)."""

import os
import subprocess
import sys

from server_harness import InProcessServer, ScriptedEngine
from tool_loop_server import HERMES_TEMPLATE

CHAT = [sys.executable, "-m", "mistralcli", "chat"]


def chat_env(data_dir, **extra) -> dict:
    env = {**os.environ, "MISTRALCLI_DATA": str(data_dir), "NO_COLOR": "1", **extra}
    env.pop("OPENAI_API_KEY", None)
    return env


def run_chat(data_dir, *args, input: str = "", timeout: float = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CHAT, *args], input=input, capture_output=True, text=True, timeout=timeout, env=chat_env(data_dir, **env)
    )


class ScriptedServer:
    """`mistral serve` in this process whose answers are script(prompt) (server_harness.ScriptedEngine), with
    SmolLM2's tokenizer, a Hermes template and no tools of its own: the calls go back to the client."""

    def __init__(self, loaded, script, token_delay: float = 0.001, template: str = HERMES_TEMPLATE):
        from mistralcli.chat_template import ChatTemplate
        from mistralcli.engine.engine import Engine, EngineConfig
        from mistralcli.server.app import ServerSettings, make_app

        engine = Engine(loaded.model, loaded.tokenizer, loaded.context_length, EngineConfig(kv_cache_mb=256))
        self.engine = ScriptedEngine(engine, script, token_delay=token_delay)
        settings = ServerSettings(
            model_name="scripted",
            chat_template=ChatTemplate(template),
            access_log=None,
            tool_call_parser="hermes",
        )
        self.server = InProcessServer(make_app(self.engine, settings))
        self.url = self.server.url

    def close(self):
        self.server.stop(wait=10)
