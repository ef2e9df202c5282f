"""Structured output: what a request's output must match (`StructuredOutputs`, on SamplingParams) and the
llguidance matchers that turn it into a token mask at each step (`grammars.GrammarCompiler`).

Nothing fails open: a constraint that cannot be compiled is refused before the request is queued
(`GrammarError`), and a constrained request never samples a token its grammar does not allow."""

from mistralcli.structured.spec import GrammarError, StructuredOutputs

__all__ = ["GrammarError", "StructuredOutputs"]
