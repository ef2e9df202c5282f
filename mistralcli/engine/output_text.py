"""OutputText: a sequence's output tokens as text, released as it becomes final.

Tokens are decoded incrementally (a UTF-8 character split over tokens waits for its last byte).
Stop strings are matched across token boundaries; a match ends the text before it, and while the
end of the text could still be the start of a stop string it is held back, so a stream never shows
text that a later token turns into a stop."""

from mistralcli.tokenizer.detokenizer import IncrementalDetokenizer


class OutputText:
    def __init__(self, tokenizer, stop: list[str], skip_special: bool = True):
        self._decoder = IncrementalDetokenizer(tokenizer, skip_special)
        self._stop = [s for s in stop if s]
        self._longest = max((len(s) for s in self._stop), default=0)
        self.text = ""  # all decoded text (cut at a stop string once one matched)
        self.matched: str | None = None  # the stop string that cut it
        self._released = 0

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; returns (text now final, whether a stop string matched)."""
        self.text += self._decoder.push(token_id)
        if not self._stop:
            return self._release(len(self.text)), False
        start = max(0, self._released - self._longest)
        found = [(i, s) for s in self._stop if (i := self.text.find(s, start)) >= 0]
        if found:
            cut, self.matched = min(found, key=lambda f: f[0])
            self.text = self.text[:cut]
            return self._release(len(self.text)), True
        return self._release(len(self.text) - self._held_back()), False

    @property
    def in_character(self) -> bool:
        """The output so far ends inside a UTF-8 character."""
        return self._decoder.in_character

    def finish(self) -> str:
        """The rest, when the sequence ends for another reason than a stop string."""
        self.text += self._decoder.flush()
        return self._release(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest end of the text that begins some stop string."""
        for n in range(min(self._longest - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self._stop):
                return n
        return 0

    def _release(self, end: int) -> str:
        end = max(end, self._released)
        piece = self.text[self._released : end]
        self._released = end
        return piece
