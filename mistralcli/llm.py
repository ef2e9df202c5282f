"""The synchronous Python API, shaped like vLLM's so scripts can switch:

    from mistralcli import LLM, SamplingParams
    llm = LLM()  # the default model; or LLM(model="path/to/model.gguf" or a Hugging Face repo id)
    outputs = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=16))
    print(outputs[0].outputs[0].text)

Every prompt goes through one engine at once (continuous batching); outputs come back in input order.
"""

import itertools
from dataclasses import dataclass, field

from mistralcli.engine.engine import Engine, EngineConfig
from mistralcli.prompt import chat_prompt_ids, encode_prompt
from mistralcli.sampling import SamplingParams, TokenLogprob


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None = None
    grammar_complete: bool | None = None  # with params.structured: False when it ended before the grammar accepts

    @property
    def cumulative_logprob(self) -> float | None:
        return sum(entry.logprob for entry in self.logprobs) if self.logprobs is not None else None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    num_cached_tokens: int = 0
    finished: bool = True

    @property
    def usage(self) -> Usage:
        return Usage(len(self.prompt_token_ids), sum(len(o.token_ids) for o in self.outputs))


class LLM:
    """A model and its engine.

    Args:
        model: a GGUF file, a Hugging Face model directory or repo id; None for the default model.
        threads: CPU threads (default: every core this process may use).
        max_num_seqs, max_num_batched_tokens, kv_cache_mb, block_size: the engine's settings (EngineConfig).
    """

    def __init__(self, model: str | None = None, threads: int | None = None, **engine_config):
        from mistralcli.loading.loader import load_model

        self.loaded = load_model(model, threads=threads)
        self.tokenizer = self.loaded.tokenizer
        self.engine = Engine(
            self.loaded.model, self.tokenizer, self.loaded.context_length, EngineConfig(**engine_config)
        )
        self._ids = itertools.count()

    def default_sampling_params(self) -> SamplingParams:
        """The model's recommended sampling settings (from its file), else mistralcli's defaults."""
        return SamplingParams(**self.loaded.sampling_defaults)

    def generate(
        self,
        prompts: str | list[str] | list[list[int]],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Complete each prompt (text, or a list of token ids) and return one output per prompt, in order.

        Args:
            prompts: one prompt or a list of them.
            sampling_params: one for all prompts, or one per prompt; None for the model's defaults.
        Returns:
            RequestOutput per prompt: `.outputs[0].text`, `.token_ids`, `.logprobs`, `.finish_reason`, `.usage`.
        """
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not isinstance(sampling_params, list):
            sampling_params = [sampling_params or self.default_sampling_params()] * len(prompts)
        if len(sampling_params) != len(prompts):
            raise ValueError(f"{len(sampling_params)} sampling params for {len(prompts)} prompts")
        results = []
        for prompt in prompts:
            text = prompt if isinstance(prompt, str) else None
            ids = encode_prompt(self.tokenizer, prompt) if text is not None else list(prompt)
            results.append(RequestOutput(f"llm-{next(self._ids)}", text, ids))
        self._run(results, sampling_params)
        return results

    def chat(
        self,
        messages: list[dict] | list[list[dict]],
        sampling_params: SamplingParams | None = None,
        chat_template_kwargs: dict | None = None,
        tools: list[dict] | None = None,
    ) -> list[RequestOutput]:
        """Answer one conversation (a list of {"role", "content"} messages) or several, through the model's
        chat template; returns one RequestOutput per conversation."""
        if self.loaded.chat_template is None:
            raise ValueError("this model has no chat template; use generate() with plain text")
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        template = self.loaded.chat_template
        prompts = [
            chat_prompt_ids(self.tokenizer, template, conversation, tools, template_kwargs=chat_template_kwargs)
            for conversation in conversations
        ]
        return self.generate(prompts, sampling_params)

    def _run(self, results: list[RequestOutput], params: list[SamplingParams]) -> None:
        by_id = {}
        try:
            for result, p in zip(results, params, strict=True):
                self.engine.add_request(result.request_id, result.prompt_token_ids, p)
                result.outputs = [
                    CompletionOutput(i, "", [], None, [] if p.logprobs is not None else None) for i in range(p.n)
                ]
                result.finished = False
                by_id[result.request_id] = result
            while any(not r.finished for r in by_id.values()):
                for out in self.engine.step():
                    result = by_id.get(out.request_id)
                    if result is None:
                        continue
                    completion = result.outputs[out.index]
                    completion.token_ids += out.new_token_ids
                    completion.text += out.text
                    if out.logprobs:
                        completion.logprobs += out.logprobs
                    if out.finished:
                        completion.finish_reason = out.finish_reason
                        completion.grammar_complete = out.grammar_complete
                        result.num_cached_tokens = out.num_cached_tokens
                        result.finished = all(c.finish_reason is not None for c in result.outputs)
        finally:
            for request_id, result in by_id.items():
                if not result.finished:
                    self.engine.abort(request_id)
