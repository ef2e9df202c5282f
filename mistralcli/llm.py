"""The synchronous Python API, shaped like vLLM's so scripts can switch:

    from mistralcli import LLM, SamplingParams
    llm = LLM()  # the default model; or LLM(model="path/to/model.gguf" or a Hugging Face repo id)
    outputs = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=16))
    print(outputs[0].outputs[0].text)

Every prompt goes through one engine at once (continuous batching); outputs come back in input order.

With tools of its own (`agent_tools=SandboxConfig(...)`, `tool_callbacks={"name": function}`,
`mcp_config=...`), `chat` runs the tool loop: the calls the model makes to them are run (every call of a
round at once), their results fed back, until the model answers (see LLM.chat).
"""

import itertools
from dataclasses import dataclass, field

from mistralcli.engine.embedder import Embedder
from mistralcli.engine.engine import Engine, EngineConfig
from mistralcli.errors import MistralError
from mistralcli.prompt import chat_prompt_ids, encode_prompt
from mistralcli.sampling import SamplingParams, TokenLogprob
from mistralcli.tools.loop import ToolCall, round_messages, split_calls


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None = None
    grammar_complete: bool | None = None  # with params.structured: False when it ended before the grammar accepts
    tool_calls: list[dict] | None = None  # chat with tools: the calls to the caller's tools (OpenAI's shape)

    @property
    def cumulative_logprob(self) -> float | None:
        return sum(entry.logprob for entry in self.logprobs) if self.logprobs is not None else None


@dataclass
class EmbeddingOutput:
    embedding: list[float]


@dataclass
class EmbeddingRequestOutput:
    """vLLM's shape: `output.outputs.embedding`."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: EmbeddingOutput


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
    # chat's tool loop: the messages it added before this answer (each round's calls, then their results),
    # and the tokens of those rounds (counted in usage)
    tool_messages: list[dict] = field(default_factory=list)
    earlier_usage: tuple[int, int] = (0, 0)

    @property
    def usage(self) -> Usage:
        prompt, completion = self.earlier_usage
        return Usage(prompt + len(self.prompt_token_ids), completion + sum(len(o.token_ids) for o in self.outputs))


class LLM:
    """A model and its engine.

    Args:
        model: a GGUF file, a Hugging Face model directory or repo id; None for the default model.
        threads: CPU threads (default: every core this process may use).
        isq: quantize the weights to this type as they load (in-situ quantization: "Q4_K_M", "Q8_0", ... as
            mistral quantize's --type), a tensor at a time; a bad name raises MistralError.
        agent_tools: a mistralcli.tools.sandbox.SandboxConfig: the agent tools (ls, cat, wc, grep, ...) over it.
        tool_callbacks: {name: function}: plain Python functions as tools (schema from the signature,
            description from the docstring).
        mcp_config: the MCP servers whose tools join: a config file's path, a dict (mistral.rs or Cursor
            shape) or a McpConfig.
        agent_permission: "auto" (dangerous tools run) or "deny" (they are refused).
        max_tool_rounds: most rounds of tool calls chat runs for one conversation.
        pooling: embed with a generating model too ("mean" or "last" of its final hidden states, normalised),
            or replace an embedding model's own pooling ("mean", "cls", "last"); see embed.
        max_num_seqs, max_num_batched_tokens, kv_cache_mb, block_size: the engine's settings (EngineConfig).
    """

    def __init__(
        self,
        model: str | None = None,
        threads: int | None = None,
        *,
        isq: str | None = None,
        agent_tools=None,
        tool_callbacks: dict | None = None,
        mcp_config=None,
        agent_permission: str = "auto",
        max_tool_rounds: int = 10,
        pooling: str | None = None,
        **engine_config,
    ):
        from mistralcli.loading.loader import load_model

        self.tools = None  # a mistralcli.tools.host.ToolHost, with tools of its own
        if agent_permission not in ("auto", "deny"):
            raise ValueError(f"agent_permission {agent_permission!r}: the Python API takes 'auto' or 'deny'")
        if agent_tools is not None or tool_callbacks or mcp_config is not None:
            from mistralcli.tools.host import ToolHost

            self.tools = ToolHost(
                agent_tools=agent_tools,
                tool_callbacks=tool_callbacks,
                mcp_config=mcp_config,
                permission=agent_permission,
            )
        self.max_tool_rounds = max_tool_rounds
        try:
            self.loaded = load_model(model, threads=threads, isq=isq).with_pooling(pooling)
            self.tokenizer = self.loaded.tokenizer
            self.engine = None  # an embedding model (an encoder) has none: it embeds only
            if not self.loaded.is_encoder:
                self.engine = Engine(
                    self.loaded.model, self.tokenizer, self.loaded.context_length, EngineConfig(**engine_config)
                )
            self.embedder = None
            if self.loaded.embedding is not None:
                self.embedder = Embedder(self.loaded.model, self.tokenizer, self.loaded.embedding)
        except BaseException:
            self.close()
            raise
        self._ids = itertools.count()

    def close(self) -> None:
        """End the MCP servers' sessions (their processes are reaped); the model stays usable without them."""
        if self.tools is not None:
            self.tools.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def embed(
        self, prompts: str | list[str] | list[list[int]], *, truncate: bool = False, dimensions: int | None = None
    ) -> list[EmbeddingRequestOutput]:
        """Each prompt's (a text's, or token ids') vector, pooled and normalised as the model says, in the prompts'
        order; many go through one forward. truncate: cut an input over the model's length (else ValueError);
        dimensions: a Matryoshka model's shorter vectors."""
        if self.embedder is None:
            raise MistralError(
                f"{self.loaded.name} does not embed as it is: LLM(model, pooling='mean') (or 'last') pools a "
                "generating model's hidden states"
            )
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        sequences = self.embedder.tokenize(list(prompts), truncate)
        vectors = self.embedder.embed_ids(sequences, dimensions)
        return [
            EmbeddingRequestOutput(f"embd-{next(self._ids)}", ids, EmbeddingOutput(vector.tolist()))
            for ids, vector in zip(sequences, vectors, strict=True)
        ]

    def _engine(self) -> Engine:
        if self.engine is None:
            raise MistralError(f"{self.loaded.name} is an embedding model: it embeds (LLM.embed) and does not generate")
        return self.engine

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
        chat template; returns one RequestOutput per conversation.

        With tools of the LLM's own (see LLM), the tool loop runs: they join `tools` (the caller's, which
        win a clash of names), the model's calls to them run (all of a round at once) and their results are
        fed back, until it answers, calls one of the caller's tools (in `.outputs[0].tool_calls`) or
        max_tool_rounds is reached (finish_reason "length"). `.tool_messages` holds the rounds' messages,
        `.usage` counts every round."""
        if self.loaded.chat_template is None:
            raise ValueError("this model has no chat template; use generate() with plain text")
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        if self.tools is not None and len(self.tools.registry):
            return _ToolChat(self, tools or [], sampling_params, chat_template_kwargs).run(conversations)
        template = self.loaded.chat_template
        prompts = [
            chat_prompt_ids(self.tokenizer, template, conversation, tools, template_kwargs=chat_template_kwargs)
            for conversation in conversations
        ]
        return self.generate(prompts, sampling_params)

    def _run(self, results: list[RequestOutput], params: list[SamplingParams]) -> None:
        by_id = {}
        engine = self._engine()
        try:
            for result, p in zip(results, params, strict=True):
                engine.add_request(result.request_id, result.prompt_token_ids, p)
                result.outputs = [
                    CompletionOutput(i, "", [], None, [] if p.logprobs is not None else None) for i in range(p.n)
                ]
                result.finished = False
                by_id[result.request_id] = result
            while any(not r.finished for r in by_id.values()):
                for out in engine.step():
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
                    engine.abort(request_id)


class _ToolChat:
    """LLM.chat's tool loop over several conversations at once: each round generates every conversation
    still going in one batch, then runs all their calls to the LLM's tools at once."""

    def __init__(self, llm: "LLM", tools: list[dict], params: SamplingParams | None, template_kwargs: dict | None):
        from mistralcli.tools.prompting import ToolPrompting

        self.llm = llm
        offered = llm.tools.runner.openai_tools(exclude={t["function"]["name"] for t in tools})
        self.server_tools = {t["function"]["name"] for t in offered}
        params = params or llm.default_sampling_params()
        self.prompting = ToolPrompting(llm.loaded, tools, offered, params, template_kwargs)

    def run(self, conversations: list[list[dict]]) -> list[RequestOutput]:
        llm = self.llm
        added: list[list[dict]] = [[] for _ in conversations]
        spent = [(0, 0)] * len(conversations)
        results: list[RequestOutput | None] = [None] * len(conversations)
        going = list(range(len(conversations)))
        for round_number in itertools.count(1):
            prompts = [self.prompting.prompt(conversations[i] + added[i]) for i in going]
            outputs = llm.generate([ids for ids, _, _ in prompts], [params for _, _, params in prompts])
            pending = []  # (conversation, content, its calls to run, whether it goes on after them)
            for i, (_, thinking, _), out in zip(going, prompts, outputs, strict=True):
                out.tool_messages, out.earlier_usage = added[i], spent[i]
                results[i] = out
                completion = out.outputs[0]
                content, calls, broken = self.prompting.read(completion.text, thinking)
                mine, theirs = split_calls(calls, self.server_tools)
                completion.tool_calls = theirs or None
                if not mine or completion.finish_reason == "length":
                    continue
                if round_number > llm.max_tool_rounds:
                    completion.finish_reason = "length"
                    continue
                pending.append((i, content, mine, not theirs and not broken))
            if not pending:
                return results
            flat = [ToolCall.of(c) for _, _, mine, _ in pending for c in mine]
            outcomes = llm.tools.run(flat)
            going = []
            for i, content, mine, goes_on in pending:
                done, outcomes = outcomes[: len(mine)], outcomes[len(mine) :]
                added[i].extend(round_messages(content, done))  # the list results[i].tool_messages is
                usage = results[i].usage
                spent[i] = (usage.prompt_tokens, usage.completion_tokens)
                if goes_on:
                    going.append(i)
            if not going:
                return results
