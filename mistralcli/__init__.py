"""mistralcli: run, serve and chat with language models from one command.

from mistralcli import LLM, SamplingParams
"""

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams"]


def __getattr__(name):  # the API loads on first use, so `import mistralcli` (and `mistral --help`) stays light
    if name == "LLM":
        from mistralcli.llm import LLM

        return LLM
    if name == "SamplingParams":
        from mistralcli.sampling import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'mistralcli' has no attribute {name!r}")
