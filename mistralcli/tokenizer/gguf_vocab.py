"""Build a `tokenizers` tokenizer for plain-text fragments from a GGUF's vocabulary.

Special tokens are split off before this tokenizer sees the text (see tokenizer.py), exactly as
llama.cpp partitions them, so the tokenizers built here hold no added tokens.

Two families, as `tokenizer.ggml.model` names them:
  gpt2  byte-level BPE with the merges stored in the file and the pre-tokenizer regex that
        `tokenizer.ggml.pre` calls for (the same expressions as llama.cpp's llama-vocab.cpp).
  llama SentencePiece BPE: merges derived from the token scores (a pair merges when the joined
        piece is in the vocabulary; higher score merges first, as llama.cpp's SPM tokenizer does),
        spaces written as U+2581, byte fallback through the <0xXX> tokens.
"""

import sys
from enum import IntEnum

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

SPIECE_SPACE = "\u2581"

# Pre-tokenizer expressions, by llama.cpp's pre-tokenizer family.
LLAMA3_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class TokenType(IntEnum):
    """`tokenizer.ggml.token_type` values (llama.cpp's llama_token_type)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


def _byte_level_split():
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)


def _regex_then_bytes(pattern: str):
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False), _byte_level_split()]
    )


def _digits_then_gpt2():
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


# tokenizer.ggml.pre -> (pre-tokenizer factory, ignore_merges)
BPE_PRE_TOKENIZERS = {
    "smollm": (_digits_then_gpt2, False),
    "starcoder": (_digits_then_gpt2, False),
    "refact": (_digits_then_gpt2, False),
    "command-r": (_digits_then_gpt2, False),
    "codeshell": (_digits_then_gpt2, False),
    "gpt-2": (lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False),
    "phi-2": (lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False),
    "mpt": (lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False),
    "olmo": (lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False),
    "qwen2": (lambda: _regex_then_bytes(QWEN2_REGEX), False),
    "stablelm2": (lambda: _regex_then_bytes(QWEN2_REGEX), False),
    "llama-bpe": (lambda: _regex_then_bytes(LLAMA3_REGEX), True),
    "llama3": (lambda: _regex_then_bytes(LLAMA3_REGEX), True),
    "llama-v3": (lambda: _regex_then_bytes(LLAMA3_REGEX), True),
    "falcon3": (lambda: _regex_then_bytes(LLAMA3_REGEX), True),
    "pixtral": (lambda: _regex_then_bytes(LLAMA3_REGEX), True),
}


def build_bpe(tokens: list[str], merges: list[str], pre: str) -> HFTokenizer:
    """Byte-level BPE for `tokenizer.ggml.model = gpt2`."""
    if pre not in BPE_PRE_TOKENIZERS:
        print(f"warning: unknown tokenizer.ggml.pre {pre!r}; using the GPT-2 pre-tokenizer", file=sys.stderr)
    make_pre, ignore_merges = BPE_PRE_TOKENIZERS.get(pre, BPE_PRE_TOKENIZERS["gpt-2"])
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = HFTokenizer(models.BPE(vocab, pairs, ignore_merges=ignore_merges))
    tok.pre_tokenizer = make_pre()
    tok.decoder = decoders.ByteLevel()
    return tok


def build_spm(tokens: list[str], scores: list[float], token_types: list[int], unk_token_id: int) -> HFTokenizer:
    """SentencePiece-style BPE for `tokenizer.ggml.model = llama` (the caller adds any space prefix)."""
    vocab = {tok: i for i, tok in enumerate(tokens)}
    # A pair merges when the joined piece is a normal token; higher score first (llama.cpp's order).
    order = sorted(
        (i for i, t in enumerate(token_types) if t in (TokenType.NORMAL, TokenType.USER_DEFINED, TokenType.UNDEFINED)),
        key=lambda i: (-scores[i], i),
    )
    merges = []
    for i in order:
        piece = tokens[i]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((left, right))
    unk = tokens[unk_token_id] if 0 <= unk_token_id < len(tokens) else None
    tok = HFTokenizer(models.BPE(vocab, merges, unk_token=unk, byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", SPIECE_SPACE)
    tok.decoder = decoders.Sequence([decoders.Replace(SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def byte_level_piece_bytes(tokens: list[str]) -> list[bytes]:
    """The bytes each byte-level token stands for (tokens with unmapped characters: their UTF-8)."""
    char_to_byte = {c: b for b, c in bytes_to_unicode().items()}
    out = []
    for tok in tokens:
        try:
            out.append(bytes(char_to_byte[c] for c in tok))
        except KeyError:
            out.append(tok.encode("utf-8"))
    return out


def spm_piece_bytes(tokens: list[str], token_types: list[int]) -> list[bytes]:
    """The bytes each SentencePiece token stands for: U+2581 is a space, <0xXX> is one byte."""
    out = []
    for tok, ttype in zip(tokens, token_types, strict=True):
        if ttype == TokenType.BYTE and len(tok) == 6 and tok.startswith("<0x"):
            out.append(bytes([int(tok[3:5], 16)]))
        else:
            out.append(tok.replace(SPIECE_SPACE, " ").encode("utf-8"))
    return out
