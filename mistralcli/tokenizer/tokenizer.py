"""Tokenizer: text <-> token ids for a model, with the model's special tokens and BOS/EOS rules.

Special tokens written in the text are split off first, longest first, as llama.cpp does
(`parse_special`); the plain fragments between them go to a `tokenizers` tokenizer.
Decoding joins each token's bytes (`token_bytes`) and decodes UTF-8 once, so a character split
over several tokens comes out whole.
"""

import json
import re
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from mistralcli.errors import ModelLoadError
from mistralcli.json_file import read_json
from mistralcli.tokenizer import gguf_vocab
from mistralcli.tokenizer.gguf_vocab import TokenType

# Token texts that end a turn in common chat formats; llama.cpp adds these to the EOG set too.
EOG_TEXTS = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
)


class Tokenizer:
    def __init__(
        self,
        *,
        fragment_tokenizer: HFTokenizer,
        tokens: list[str],
        token_bytes: list[bytes],
        special_ids: set[int],
        control_ids: set[int],
        bos_token_id: int | None,
        eos_token_id: int | None,
        eog_token_ids: set[int],
        add_bos: bool,
        add_eos: bool = False,
        add_space_prefix: bool = False,
        hf_tokenizer: HFTokenizer | None = None,
    ):
        self.fragment_tokenizer = fragment_tokenizer
        self.hf_tokenizer = hf_tokenizer  # tokenizer.json's whole pipeline (an encoder's [CLS] ... [SEP]), if any
        self.tokens = tokens
        self.token_bytes = token_bytes
        self.control_ids = control_ids  # never printed when decoding with skip_special
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.eog_token_ids = eog_token_ids
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.add_space_prefix = add_space_prefix
        self._special_by_text = {tokens[i]: i for i in sorted(special_ids)}
        self._control_by_text = {tokens[i]: i for i in sorted(control_ids, reverse=True)}  # a text's lowest id
        self._always_split = {tokens[i] for i in special_ids if i not in control_ids}
        by_length = sorted(self._special_by_text, key=lambda t: (-len(t), t))
        self._special_re = re.compile("|".join(map(re.escape, by_length))) if by_length else None

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def bos_token(self) -> str:
        return self.tokens[self.bos_token_id] if self.bos_token_id is not None else ""

    @property
    def eos_token(self) -> str:
        return self.tokens[self.eos_token_id] if self.eos_token_id is not None else ""

    def control_id(self, text: str) -> int | None:
        """The id of the control token whose text this is (None: no such token)."""
        return self._control_by_text.get(text)

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`; add_special adds BOS/EOS as the model says; parse_special reads
        special tokens written in the text as themselves."""
        ids: list[int] = []
        if add_special and self.add_bos and self.bos_token_id is not None:
            ids.append(self.bos_token_id)
        prev_special = True
        for fragment, special_id in self._partition(text, parse_special):
            if special_id is not None:
                ids.append(special_id)
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                fragment = " " + fragment
            ids.extend(self.fragment_tokenizer.encode(fragment, add_special_tokens=False).ids)
            prev_special = False
        if add_special and self.add_eos and self.eos_token_id is not None:
            ids.append(self.eos_token_id)
        return ids

    def _partition(self, text: str, parse_special: bool):
        """Yield (fragment, None) for plain text and (token_text, id) for special tokens."""
        pos = 0
        if self._special_re is not None:
            for m in self._special_re.finditer(text):
                if not parse_special and m.group() not in self._always_split:
                    continue
                if m.start() > pos:
                    yield text[pos : m.start()], None
                yield m.group(), self._special_by_text[m.group()]
                pos = m.end()
        if pos < len(text):
            yield text[pos:], None

    def decode_bytes(self, ids, skip_special: bool = True) -> bytes:
        return b"".join(self.token_bytes[i] for i in ids if not (skip_special and i in self.control_ids))

    def decode(self, ids, skip_special: bool = True) -> str:
        text = self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")
        if self.add_space_prefix and text.startswith(" "):
            text = text[1:]
        return text

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_gguf_metadata(cls, metadata: dict, path="") -> "Tokenizer":
        """Build from `tokenizer.ggml.*` metadata (gpt2 BPE or llama SentencePiece)."""
        model = metadata.get("tokenizer.ggml.model")
        tokens = metadata.get("tokenizer.ggml.tokens")
        if not tokens:
            raise ModelLoadError(path, "no embedded vocabulary (tokenizer.ggml.tokens)")
        token_types = metadata.get("tokenizer.ggml.token_type") or [TokenType.NORMAL] * len(tokens)
        if model == "gpt2":
            frag = gguf_vocab.build_bpe(
                tokens, metadata.get("tokenizer.ggml.merges", []), metadata.get("tokenizer.ggml.pre", "default")
            )
            token_bytes = gguf_vocab.byte_level_piece_bytes(tokens)
            add_space_prefix = False
            add_bos_default = False
        elif model == "llama":
            scores = metadata.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
            unk = metadata.get("tokenizer.ggml.unknown_token_id", 0)
            frag = gguf_vocab.build_spm(tokens, scores, token_types, unk)
            token_bytes = gguf_vocab.spm_piece_bytes(tokens, token_types)
            add_space_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
            add_bos_default = True
        else:
            raise ModelLoadError(path, f"unsupported tokenizer model {model!r} (supported: gpt2, llama)")
        control = {i for i, t in enumerate(token_types) if t in (TokenType.CONTROL, TokenType.UNKNOWN)}
        special = control | {i for i, t in enumerate(token_types) if t == TokenType.USER_DEFINED}
        bos = metadata.get("tokenizer.ggml.bos_token_id")
        eos = metadata.get("tokenizer.ggml.eos_token_id")
        eog = {
            i
            for i in (eos, metadata.get("tokenizer.ggml.eot_token_id"), metadata.get("tokenizer.ggml.eom_token_id"))
            if i is not None
        }
        eog |= {i for i in control if tokens[i] in EOG_TEXTS}
        return cls(
            fragment_tokenizer=frag,
            tokens=tokens,
            token_bytes=token_bytes,
            special_ids=special,
            control_ids=control,
            bos_token_id=bos,
            eos_token_id=eos,
            eog_token_ids=eog,
            add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", add_bos_default)),
            add_eos=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
            add_space_prefix=add_space_prefix,
        )

    @classmethod
    def from_directory(cls, directory: str | Path) -> "Tokenizer":
        """Build from a Hugging Face model directory (tokenizer.json + tokenizer_config.json)."""
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(directory, "no tokenizer.json")
        try:
            hf = HFTokenizer.from_file(str(path))
            spec = json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise ModelLoadError(path, f"unreadable tokenizer ({exc})") from None
        config = read_json(directory / "tokenizer_config.json")
        generation = read_json(directory / "generation_config.json")

        vocab = hf.get_vocab(with_added_tokens=True)
        tokens = [""] * (max(vocab.values()) + 1)
        for text, i in vocab.items():
            tokens[i] = text
        added = {t["id"]: t for t in spec.get("added_tokens", [])}
        control = {i for i, t in added.items() if t.get("special")}
        special = set(added)
        frag = HFTokenizer.from_str(hf.to_str())
        frag.post_processor = None
        token_bytes = _token_bytes_for(spec, tokens, added)

        def token_id(key):
            value = config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            return vocab.get(value) if value else None

        bos, eos = token_id("bos_token"), token_id("eos_token")
        eog = {eos} if eos is not None else set()
        gen_eos = generation.get("eos_token_id")
        eog |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        eog |= {i for i in control if tokens[i] in EOG_TEXTS}
        add_bos = config.get("add_bos_token")
        if add_bos is None:  # tokenizer.json's post-processor decides: does it emit BOS?
            add_bos = bos is not None and hf.encode("a").ids[:1] == [bos]
        return cls(
            fragment_tokenizer=frag,
            tokens=tokens,
            token_bytes=token_bytes,
            special_ids=special,
            control_ids=control,
            bos_token_id=bos,
            eos_token_id=eos,
            eog_token_ids=eog,
            add_bos=bool(add_bos),
            add_eos=bool(config.get("add_eos_token", False)),
            hf_tokenizer=_untruncated(hf),
        )


def _untruncated(hf: HFTokenizer) -> HFTokenizer:
    """The tokenizer without its padding and truncation (inputs over a model's length are cut, or refused, by
    the caller, who says so)."""
    hf.no_padding()
    hf.no_truncation()
    return hf


def _token_bytes_for(spec: dict, tokens: list[str], added: dict) -> list[bytes]:
    """Bytes per token for a tokenizer.json: byte-level vocabularies map characters back to bytes,
    SentencePiece-style ones use U+2581 and <0xXX>; added tokens are their own text."""
    decoder = json.dumps(spec.get("decoder") or {})
    if '"ByteLevel"' in decoder:
        out = gguf_vocab.byte_level_piece_bytes(tokens)
    else:
        types = [
            TokenType.BYTE if len(t) == 6 and t.startswith("<0x") and t.endswith(">") else TokenType.NORMAL
            for t in tokens
        ]
        out = gguf_vocab.spm_piece_bytes(tokens, types)
    for i, t in added.items():
        out[i] = t["content"].encode("utf-8")
    return out
