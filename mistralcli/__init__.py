"""mistralcli: run, serve and chat with language models from one command.

from mistralcli import LLM, SamplingParams
"""

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams", "StructuredOutputs", "ThinkingBudget"]


def __getattr__(name):  # the API loads on first use, so `import mistralcli` (and `mistral --help`) stays light
    if name == "LLM":
        from mistralcli.llm import LLM

        return LLM
    if name == "SamplingParams":
        from mistralcli.sampling import SamplingParams

        return SamplingParams
    if name == "StructuredOutputs":
        from mistralcli.structured import StructuredOutputs

        return StructuredOutputs
    if name == "ThinkingBudget":
        from mistralcli.engine.thinking import ThinkingBudget

        return ThinkingBudget
    raise AttributeError(f"module 'mistralcli' has no attribute {name!r}")
