"""The llguidance side: a tokenizer built from ours, grammars compiled (and checked) once, one matcher per
request choice, and the token masks of a step's constrained sequences, filled in parallel off the GIL.

llguidance sees every token as the bytes it decodes to (`Tokenizer.token_bytes`: byte-fallback pieces and
SentencePiece spaces already resolved) and the control tokens as special ones, so a grammar's text can
never be produced by a special token, and the model's end-of-generation tokens are allowed only where the
grammar accepts. (A token whose bytes begin with 0xFF, such as SentencePiece's byte token <0xFF>, is empty
to llguidance, which marks special tokens with that byte; 0xFF is never valid UTF-8, so no text needs it.)"""

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
import numpy as np
from llguidance.numpy import fill_next_token_bitmask, fill_next_token_bitmask_par

from mistralcli.structured.spec import GrammarError, StructuredOutputs

CACHE_SIZE = 64  # compiled grammars kept (by their text): one per distinct schema in use


class _TokenizerView:
    """What llguidance's TokenizerWrapper reads from a tokenizer."""

    def __init__(self, tokenizer, vocab_size: int):
        self._tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.bos_token_id = tokenizer.bos_token_id
        # one entry per row of the model's logits: rows past the tokenizer's tokens are empty (never allowed)
        tokens = list(tokenizer.token_bytes[:vocab_size])
        self.tokens = tokens + [b""] * (vocab_size - len(tokens))
        self.special_token_ids = sorted(i for i in tokenizer.control_ids if i < vocab_size)

    def __call__(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tokenizer.encode(text, add_special=False, parse_special=False)


def mask_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


class GrammarCompiler:
    """Compiles StructuredOutputs for one tokenizer and vocabulary size (the model's logits, which may have
    more rows than the tokenizer has tokens: those are never allowed). Thread-safe: the server checks
    requests on its own thread while the engine steps on another."""

    def __init__(self, tokenizer, vocab_size: int, overlap: bool = True):
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.overlap = overlap  # fill masks on a worker thread while the model runs (False: at once, here)
        self._lltokenizer = None
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = None
        self._pool = None

    @property
    def lltokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._lltokenizer is None:
                view = llguidance.TokenizerWrapper(_TokenizerView(self._tokenizer, self.vocab_size))
                eos = sorted(t for t in self._tokenizer.eog_token_ids if t < self.vocab_size) or None
                self._lltokenizer = llguidance.LLTokenizer(view, n_vocab=self.vocab_size, eos_token=eos)
            return self._lltokenizer

    def matcher(self, spec: StructuredOutputs) -> llguidance.LLMatcher:
        """A fresh matcher for one request choice. Raises GrammarError (naming the field and, where
        llguidance says, the keyword) for a constraint that cannot be compiled."""
        grammar = spec.to_grammar()
        with self._lock:
            compiled = self._compiled.get(grammar)
            if compiled is not None:
                self._compiled.move_to_end(grammar)
                return compiled.deep_copy()
        compiled = self._compile(grammar, spec.kind)
        with self._lock:
            self._compiled[grammar] = compiled
            while len(self._compiled) > CACHE_SIZE:
                self._compiled.popitem(last=False)
        return compiled.deep_copy()

    def check(self, spec: StructuredOutputs) -> None:
        """Raise GrammarError if spec cannot be compiled (compiling it now, so the request that follows finds
        it in the cache)."""
        self.matcher(spec)

    def _compile(self, grammar: str, field: str) -> llguidance.LLMatcher:
        tokenizer = self.lltokenizer
        validate(grammar, field, tokenizer)
        compiled = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if compiled.is_error():
            raise GrammarError(_message(compiled.get_error()), field)
        return compiled

    # ---- a step's masks
    def start_masks(self, matchers: list[llguidance.LLMatcher]) -> "Future[np.ndarray]":
        """Fill the next-token masks of these matchers ((B, words) int32, row i for matchers[i]). With
        overlap, on a worker thread, which llguidance spreads over its own threads without the GIL: the
        model's forward runs meanwhile (the matchers must not be advanced before the future is done).
        Without (no core is left over from the kernels' threads, whose spinning a worker would slow), one
        after another, here: a mask takes tens of microseconds."""
        masks = np.empty((len(matchers), mask_words(self.vocab_size)), dtype=np.int32)
        if not self.overlap:
            for i, matcher in enumerate(matchers):
                fill_next_token_bitmask(matcher, masks, i)
            done: Future = Future()
            done.set_result(masks)
            return done
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-masks")
            self._executor = llguidance.LLExecutor()
        batch = [(m, i) for i, m in enumerate(matchers)]
        return self._pool.submit(_fill, self._executor, batch, masks)


def _fill(executor, batch, masks: np.ndarray) -> np.ndarray:
    fill_next_token_bitmask_par(executor, batch, masks)
    return masks


def validate(grammar: str, field: str, tokenizer: llguidance.LLTokenizer | None = None) -> None:
    """Raise GrammarError (for this StructuredOutputs field) if llguidance refuses the grammar; without a
    tokenizer (before a model is loaded) the checks that need none."""
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if is_error:
        raise GrammarError(_message(messages[0]), field)


def _message(message: str) -> str:
    """llguidance's message in one line: its first, and the parser's `error: ...` line where there is one,
    without the grammar excerpt it appends."""
    lines = [line.strip() for line in message.strip().splitlines()]
    if not lines:
        return "the grammar is invalid"
    detail = next((line for line in lines[1:] if line.startswith("error:")), None)
    return f"{lines[0]} {detail}" if detail else lines[0]
