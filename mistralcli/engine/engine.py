"""Engine: many requests at once over a paged KV cache. Three verbs: `add_request`, `step`,
`has_unfinished`; generation, streaming, the server and chat are loops over them.

Each step schedules a batch (scheduler.py), computes it (model_runner.py), then samples the next
token of every sequence whose tokens are all computed, and finishes those that stop.
"""

import itertools
import os
import time
from dataclasses import dataclass, replace

import numpy as np

from mistralcli.engine.block_manager import BlockManager
from mistralcli.engine.metrics import EngineCounters
from mistralcli.engine.model_runner import ModelRunner
from mistralcli.engine.output_text import OutputText
from mistralcli.engine.paged_cache import PagedKVCache, cache_dtype
from mistralcli.engine.scheduler import Scheduler, SchedulerConfig
from mistralcli.engine.sequence import Sequence, SequenceStatus
from mistralcli.engine.thinking import BudgetState
from mistralcli.errors import MistralError
from mistralcli.ops.cpu import available_cores
from mistralcli.sampling import SamplingParams, TokenLogprob, dry_breaker_mask, rng_state, sample, token_logprob
from mistralcli.structured import GrammarError
from mistralcli.structured.grammars import GrammarCompiler

DEFAULT_KV_MEMORY_FRACTION = 0.3  # of the memory available at start, when no --kv-cache-mb is given


class RequestError(MistralError):
    """A request the engine cannot take (it was not queued). param: the request field at fault (None: the
    prompt); code: a short machine-readable reason (the server's OpenAI error code); detail: the message
    without the field it names, where a caller names the field its own way."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_prompt", detail: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code
        self.detail = detail if detail is not None else message


@dataclass
class EngineConfig:
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    block_size: int = 16
    kv_cache_mb: float | None = None  # None: DEFAULT_KV_MEMORY_FRACTION of available memory, at most what
    #                                   max_num_seqs full contexts need
    kv_cache_dtype: str = "f32"  # or "f16": half the memory per token (paged_cache.KV_CACHE_DTYPES)

    def __post_init__(self):
        cache_dtype(self.kv_cache_dtype)  # validates it
        if self.block_size < 1:
            raise ValueError("block_size must be at least 1")
        if self.kv_cache_mb is not None and self.kv_cache_mb <= 0:
            raise ValueError("kv_cache_mb must be positive")
        SchedulerConfig(self.max_num_seqs, self.max_num_batched_tokens)  # validates those two


@dataclass
class RequestOutput:
    """What one step produced for one request: new tokens, and the text now final (see OutputText)."""

    request_id: str
    new_token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    index: int = 0  # the choice (of the request's n) this is about; `finished` is that choice's
    # a constrained choice, once finished: whether its output is complete under the grammar (False: it ended
    # first, at max_tokens or the context's end); None: unconstrained, or not finished
    grammar_complete: bool | None = None
    stop_string: str | None = None  # once finished: the stop string that ended the output, if one did


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


class Engine:
    def __init__(self, model, tokenizer, context_length: int, config: EngineConfig | None = None):
        if getattr(model, "is_encoder", False):
            raise MistralError(
                "this is an embedding model: it embeds (mistral serve's /v1/embeddings, LLM.embed) "
                "and does not generate"
            )
        self.config = config = config or EngineConfig()
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        a = model.args
        dtype = cache_dtype(config.kv_cache_dtype)
        per_block = PagedKVCache.bytes_per_block(
            a.num_hidden_layers, config.block_size, a.num_key_value_heads, a.head_dim, dtype
        )
        if config.kv_cache_mb is not None:
            budget = int(config.kv_cache_mb * 2**20)
        else:
            budget = int(DEFAULT_KV_MEMORY_FRACTION * available_memory_bytes())
            budget = min(
                budget, config.max_num_seqs * (context_length + config.block_size) * per_block // config.block_size
            )
        num_blocks = budget // per_block
        if num_blocks < 1:
            raise MistralError(
                f"a KV cache of {budget / 2**20:.1f} MiB holds no block of {config.block_size} tokens "
                f"({per_block / 2**20:.2f} MiB each)"
            )
        self.blocks = BlockManager(num_blocks, config.block_size)
        self.cache = PagedKVCache(
            a.num_hidden_layers, num_blocks, config.block_size, a.num_key_value_heads, a.head_dim, dtype
        )
        self.scheduler = Scheduler(SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens), self.blocks)
        self.runner = ModelRunner(model, self.cache, self.blocks)
        # grammar masks overlap the forward only where a core is left over from the kernels' threads
        kernel_threads = getattr(model.ops, "num_threads", 0)
        self.grammars = GrammarCompiler(tokenizer, self.runner.vocab_size, overlap=available_cores() > kernel_threads)
        self.counters = EngineCounters()
        self._requests: dict[str, list[Sequence]] = {}  # request id -> its choices (one until it forks)
        self._seq_ids = itertools.count()
        self._breaker_masks: dict[tuple[str, ...], np.ndarray] = {}

    @property
    def max_tokens_in_cache(self) -> int:
        return self.blocks.num_blocks * self.config.block_size

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams | None = None) -> None:
        """Queue a request. Raises RequestError (and queues nothing) for what `validate` refuses, or a
        request id already in use."""
        params = params or SamplingParams()
        if request_id in self._requests:
            raise RequestError(f"request id {request_id!r} is already in use", param="request_id")
        self.validate(prompt_ids, params)  # so a given max_tokens fits the context after the prompt
        room = self.context_length - len(prompt_ids)
        stops = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.tokenizer.eog_token_ids))
        seq = Sequence(
            next(self._seq_ids),
            request_id,
            list(prompt_ids),
            params,
            room if params.max_tokens is None else params.max_tokens,
            frozenset(stops),
            rng=rng_state(params.seed),
            text=OutputText(self.tokenizer, params.stop, params.skip_special_tokens),
            dry_breakers=self._dry_breakers(tuple(params.dry_sequence_breakers)) if params.dry_multiplier > 0 else None,
            matcher=self.grammars.matcher(params.structured) if params.structured is not None else None,
            thought=BudgetState(params.thinking_budget) if params.thinking_budget is not None else None,
        )
        self._requests[request_id] = [seq]
        self.scheduler.add(seq)
        self.counters.added_requests += 1
        self.counters.constrained_requests += params.structured is not None

    @property
    def vocab_size(self) -> int:
        """The ids a request may name: rows of the model's output that the tokenizer also knows."""
        return min(self.runner.vocab_size, self.tokenizer.vocab_size)

    def _dry_breakers(self, breakers: tuple[str, ...]) -> np.ndarray:
        """Which tokens end a DRY repeat (their text holds a breaker), computed once per set of breakers."""
        if breakers not in self._breaker_masks:
            texts = [piece.decode("utf-8", errors="replace") for piece in self.tokenizer.token_bytes]
            texts += [""] * (self.runner.vocab_size - len(texts))
            self._breaker_masks[breakers] = dry_breaker_mask(texts, list(breakers))
        return self._breaker_masks[breakers]

    def validate(self, prompt_ids: list[int], params: SamplingParams | None = None) -> None:
        """Raise RequestError if this request could not be queued: the one check of a request, for every
        caller (changes nothing; safe to call from another thread than the one stepping the engine).
        Refused: an empty prompt, one that does not fit the context or the KV cache, a max_tokens that
        the context cannot hold after the prompt, token ids (in the prompt or the params) outside the
        vocabulary, a structured-output constraint that does not compile (param "structured"; its message
        names the field of StructuredOutputs and what llguidance refused)."""
        params = params or SamplingParams()
        if not prompt_ids:
            raise RequestError("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            raise RequestError(
                f"the prompt is {len(prompt_ids)} tokens; the model's context holds {self.context_length}",
                code="context_length_exceeded",
            )
        if len(prompt_ids) >= self.max_tokens_in_cache:
            raise RequestError(f"the prompt is {len(prompt_ids)} tokens; the KV cache holds {self.max_tokens_in_cache}")
        max_tokens = params.max_tokens
        if max_tokens is not None and len(prompt_ids) + max_tokens > self.context_length:
            raise RequestError(
                f"the model's context holds {self.context_length} tokens; the prompt is {len(prompt_ids)} "
                f"tokens and max_tokens is {max_tokens}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        vocab = self.vocab_size
        bad = next((t for t in prompt_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise RequestError(f"prompt: token id {bad} is outside the vocabulary ({vocab} tokens)")
        for name, ids in (
            ("stop_token_ids", params.stop_token_ids),
            ("allowed_token_ids", params.allowed_token_ids),
            ("banned_token_ids", params.banned_token_ids),
            ("logit_bias", params.logit_bias),
        ):
            bad = next((t for t in ids or () if not 0 <= int(t) < vocab), None)
            if bad is not None:
                raise RequestError(
                    f"{name}: token id {bad} is outside the vocabulary ({vocab} tokens)",
                    param=name,
                    code="invalid_value",
                )
        budget = params.thinking_budget
        if budget is not None:
            ids = (*budget.start_ids, *budget.end_ids, *(budget.forced_ids or ()))
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise RequestError(
                    f"thinking_budget: token id {bad} is outside the vocabulary ({vocab} tokens)",
                    param="thinking_budget",
                    code="invalid_value",
                )
        if params.structured is not None:
            try:
                self.grammars.check(params.structured)
            except GrammarError as exc:
                raise RequestError(str(exc), param="structured", code="invalid_grammar", detail=exc.reason) from None

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its blocks; False if it is not (or no longer) in the engine."""
        seqs = self._requests.pop(request_id, None)
        if seqs is None:
            return False
        for seq in seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def stats(self) -> dict:
        """A snapshot for metrics: queues, KV blocks, prefix cache, tokens (see metrics.EngineCounters)."""
        blocks = self.blocks
        return {
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting),
            "kv_blocks_total": blocks.num_blocks,
            "kv_blocks_free": blocks.num_free_blocks,
            "kv_blocks_used": blocks.num_blocks - blocks.num_free_blocks,
            "prefix_cache_queries": blocks.num_prefix_queries,
            "prefix_cache_hits": blocks.num_prefix_hits,
            "prefix_cache_hit_rate": blocks.prefix_hit_rate,
            "preemptions": self.scheduler.num_preemptions,
            "added_requests": self.counters.added_requests,
            "constrained_requests": self.counters.constrained_requests,
            "prompt_tokens": self.counters.prompt_tokens,
            "generated_tokens": self.counters.generated_tokens,
            "finished_requests": self.counters.finished_requests,
            "steps": self.counters.steps,
        }

    def step(self) -> list[RequestOutput]:
        """Compute one batch; return what each request in it produced."""
        start = time.perf_counter()
        try:
            return self._step()
        finally:
            self.counters.step_s += time.perf_counter() - start

    def _step(self) -> list[RequestOutput]:
        batch = self.scheduler.schedule()
        outputs = {}
        for seq in batch.out_of_blocks:
            outputs[seq.request_id, seq.index] = self._finish(seq, "length", [], seq.text.finish())
        if batch.is_empty:
            return list(outputs.values())
        self.counters.steps += 1
        mask_rows, masks = self._start_masks(batch)
        start = time.perf_counter()
        results = self.runner.execute(batch)
        self.counters.model_s += time.perf_counter() - start
        masks = masks.result() if masks is not None else None
        for seq, num_computed, logits in results:
            seq.num_computed += num_computed
            self.blocks.commit(seq.seq_id, seq.num_computed)
            if seq.num_computed < seq.num_tokens:
                continue  # a prompt chunk, or replaying outputs after a preemption
            choices = [seq]
            if seq.params.n > 1 and not seq.output_ids and len(self._requests.get(seq.request_id, ())) == 1:
                choices += self._fork(seq)
            mask = masks[mask_rows[seq.seq_id]] if seq.matcher is not None else None
            for choice in choices:  # forked choices' matchers are copies of seq's, in the same state
                outputs[choice.request_id, choice.index] = self._sample(choice, logits, mask)
        return list(outputs.values())

    def _start_masks(self, batch):
        """Start filling the grammar masks of the constrained sequences that sample this step (decodes, and
        prefills whose last chunk this is) while the model runs: (seq id -> row of the masks, the masks'
        future), the future None when there are none."""
        sampling = [seq for seq, n in batch.prefills if seq.num_computed + n == seq.num_tokens] + batch.decodes
        constrained = [seq for seq in sampling if seq.matcher is not None]
        if not constrained:
            return {}, None
        rows = {seq.seq_id: i for i, seq in enumerate(constrained)}
        return rows, self.grammars.start_masks([seq.matcher for seq in constrained])

    def _fork(self, seq: Sequence) -> list[Sequence]:
        """The other n - 1 choices of seq's request, sharing its prompt blocks (copied when written)."""
        children = []
        for index in range(1, seq.params.n):
            seed = None if seq.params.seed is None else seq.params.seed + index
            params = replace(seq.params, seed=seed)
            child = Sequence(
                next(self._seq_ids),
                seq.request_id,
                list(seq.prompt_ids),
                params,
                seq.max_tokens,
                seq.stop_token_ids,
                status=SequenceStatus.RUNNING,
                num_computed=seq.num_computed,
                arrival_s=seq.arrival_s,
                num_cached_tokens=seq.num_cached_tokens,
                index=index,
                rng=rng_state(seed),
                text=OutputText(self.tokenizer, params.stop, params.skip_special_tokens),
                dry_breakers=seq.dry_breakers,
                matcher=seq.matcher.deep_copy() if seq.matcher is not None else None,
                thought=BudgetState(params.thinking_budget) if params.thinking_budget is not None else None,
            )
            self.blocks.fork(seq.seq_id, child.seq_id)
            self.scheduler.running.append(child)
            self._requests[seq.request_id].append(child)
            children.append(child)
        return children

    def _sample(self, seq: Sequence, logits: np.ndarray, mask: np.ndarray | None = None) -> RequestOutput:
        """Pick seq's next token (among those its grammar mask allows, or the one its spent thinking budget
        forces), add it, and say what that produced."""
        if len(logits) > self.vocab_size:  # rows the tokenizer has no token for (a padded output layer)
            logits[self.vocab_size :] = -np.inf
        # a spent thinking budget forces the thought's end, once the text is not inside a character (as
        # llama.cpp's reasoning budget waits for UTF-8: a forced tag there would leave broken text)
        forced = seq.thought.forced() if seq.thought is not None and not seq.text.in_character else None
        if forced is not None:
            token = forced
            logprob = token_logprob(logits, token, seq.params.logprobs) if seq.params.logprobs is not None else None
        else:
            token, logprob = sample(
                logits,
                seq.params,
                seq.token_ids,
                seq.rng,
                len(seq.output_ids),
                seq.stop_token_ids,
                seq.dry_breakers,
                mask,
            )
        if seq.thought is not None and token >= 0:
            seq.thought.accept(token)
        logprobs = [logprob] if logprob is not None else None
        now = time.perf_counter()
        if seq.first_token_s is None:
            seq.first_token_s = now
            self.counters.ttft_s.observe(now - seq.arrival_s)
        else:
            self.counters.itl_s.observe(now - seq.last_token_s)
        seq.last_token_s = now
        if token < 0:  # the grammar allows no token here (nor, then, an end): the output cannot go on
            return self._finish(seq, "stop", [], seq.text.finish(), logprobs)
        if token in seq.stop_token_ids:
            return self._finish(seq, "stop", [], seq.text.finish(), logprobs)
        seq.output_ids.append(token)
        self.counters.generated_tokens += 1
        text, matched = seq.text.push(token)
        if seq.matcher is not None:
            seq.matcher.consume_token(token)
            seq.text_ends.append(len(seq.text.text))
            if matched:
                self._roll_back_to_text(seq)
            elif seq.matcher.is_stopped():  # the grammar is complete and takes nothing more
                return self._finish(seq, "stop", [token], text + seq.text.finish(), logprobs)
        if matched:
            return self._finish(seq, "stop", [token], text, logprobs)
        if len(seq.output_ids) >= seq.max_tokens:
            return self._finish(seq, "length", [token], text + seq.text.finish(), logprobs)
        return self._output(seq, [token], text, False, logprobs)

    @staticmethod
    def _roll_back_to_text(seq: Sequence) -> None:
        """A stop string cut the text: roll the matcher back over the tokens whose text lies past the cut (a
        token the cut splits stays, so the grammar's verdict is on at most one token more than the text)."""
        kept = len(seq.text.text)
        over = 0
        while over < len(seq.text_ends) - 1 and seq.text_ends[-2 - over] >= kept:
            over += 1
        if over:
            seq.matcher.rollback(over)

    def _output(self, seq: Sequence, new_ids: list[int], text: str, finished: bool, logprobs=None) -> RequestOutput:
        complete = None
        if finished and seq.matcher is not None:
            complete = seq.matcher.is_accepting() and not seq.matcher.is_error()
        return RequestOutput(
            seq.request_id,
            new_ids,
            text,
            finished,
            seq.finish_reason,
            seq.num_prompt_tokens,
            len(seq.output_ids),
            seq.num_cached_tokens,
            logprobs,
            seq.index,
            complete,
            seq.text.matched if finished else None,
        )

    def _finish(
        self, seq: Sequence, reason: str, new_ids: list[int] | None = None, text: str = "", logprobs=None
    ) -> RequestOutput:
        self.scheduler.finish(seq, reason)
        choices = self._requests.get(seq.request_id, [])
        if all(choice.is_finished for choice in choices):
            self._requests.pop(seq.request_id, None)
            self.counters.finished_requests += 1
            self.counters.prompt_tokens += seq.num_prompt_tokens
        return self._output(seq, new_ids or [], text, True, logprobs)
