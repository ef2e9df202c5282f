"""Token ids to text as they come."""

import codecs


class IncrementalDetokenizer:
    """Turns token ids into text as they come, never splitting a UTF-8 character."""

    def __init__(self, tokenizer, skip_special: bool = True):
        self.tokenizer = tokenizer
        self.skip_special = skip_special  # control tokens (the tokenizer's control_ids) give no text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.decode_bytes([token_id], self.skip_special))

    @property
    def in_character(self) -> bool:
        """The last tokens left a UTF-8 character unfinished (its first bytes wait for the rest)."""
        return bool(self._decoder.getstate()[0])

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
