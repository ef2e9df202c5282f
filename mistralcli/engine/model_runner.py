"""ModelRunner: the only part of the engine that touches arrays. Runs one scheduled batch: the prompt
chunks through one forward of the model (over views of the paged cache), and every decoding sequence's
next token through the decode step the model's ops build for it (one batched C call), or through
forward where the ops have none.

Legend: B decoding sequences, V vocabulary."""

import numpy as np

from mistralcli.engine.block_manager import BlockManager
from mistralcli.engine.paged_cache import PagedKVCache
from mistralcli.engine.scheduler import ScheduledBatch
from mistralcli.engine.sequence import Sequence


class ModelRunner:
    def __init__(self, model, cache: PagedKVCache, blocks: BlockManager):
        self.model = model
        self.cache = cache
        self.blocks = blocks
        self.vocab_size = model.output.shape[0]
        self.decode_step = model.ops.decode_step(model)  # None: decode through forward, op by op

    def execute(self, batch: ScheduledBatch) -> list[tuple[Sequence, int, np.ndarray]]:
        """(sequence, tokens computed, logits (V,) after its last token) for each scheduled sequence."""
        self.cache.copy_blocks(batch.copies)
        results = []
        if batch.prefills:
            chunks = [(seq.token_ids[seq.num_computed : seq.num_computed + n], seq.num_computed)
                      for seq, n in batch.prefills]  # fmt: skip
            last = self.prefill(chunks, [self._table(seq) for seq, _ in batch.prefills])
            results.extend((seq, n, row) for (seq, n), row in zip(batch.prefills, last, strict=True))
        if batch.decodes:
            seqs = batch.decodes
            tokens = [seq.token_ids[seq.num_computed] for seq in seqs]
            positions = [seq.num_computed for seq in seqs]
            logits = self.decode(tokens, positions, [self._table(seq) for seq in seqs])
            results.extend((seq, 1, row) for seq, row in zip(seqs, logits, strict=True))
        return results

    def prefill(self, chunks: list[tuple[list[int], int]], block_tables: list[list[int]]) -> list[np.ndarray]:
        """Prompt chunks (token ids, position of the first) of several sequences: the logits (V,) after each
        one's last token. Every chunk goes through one forward (prompt batching: the weights are read once for
        all of them); each last token's logits are its own product, as in a forward of its own."""
        if len(chunks) == 1:
            ids, start = chunks[0]
            return [self.forward(ids, range(start, start + len(ids)), block_tables[0])[-1]]
        token_ids = np.concatenate([np.asarray(ids) for ids, _ in chunks])
        positions = np.concatenate([np.arange(start, start + len(ids), dtype=np.int64) for ids, start in chunks])
        view = self.cache.views(block_tables, [len(ids) for ids, _ in chunks])
        h = self.model.hidden_states(token_ids, positions, view)
        ends = np.cumsum([len(ids) for ids, _ in chunks]) - 1
        return [self.model.ops.logits(h[end : end + 1], self.model.output)[0] for end in ends]

    def forward(self, token_ids, positions, block_table: list[int], all_logits: bool = False) -> np.ndarray:
        """One sequence's chunk (T,) at positions (T,) through the model over its blocks: logits (T, V)
        if all_logits else (1, V) for the last token."""
        view = self.cache.view(block_table)
        return self.model.forward(np.asarray(token_ids), np.asarray(positions, dtype=np.int64), view, all_logits)

    def decode(self, token_ids, positions, block_tables: list[list[int]]) -> np.ndarray:
        """One token for each of B sequences, token_ids and positions (B,), in one decode step: logits (B, V)."""
        tokens = np.asarray(token_ids, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        logits = np.empty((len(tokens), self.vocab_size), dtype=np.float32)
        if self.decode_step is None:
            for i, table in enumerate(block_tables):
                logits[i] = self.forward(tokens[i : i + 1], positions[i : i + 1], table)[-1]
            return logits
        tables = np.zeros((len(tokens), max(len(t) for t in block_tables)), dtype=np.int32)
        for i, table in enumerate(block_tables):
            tables[i, : len(table)] = table
        self.decode_step.decode(tokens, positions, tables, self.cache.k, self.cache.v, logits)
        return logits

    def _table(self, seq: Sequence) -> list[int]:
        return self.blocks.block_table(seq.seq_id)
