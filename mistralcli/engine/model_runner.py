"""ModelRunner: the only part of the engine that touches arrays. Runs one scheduled batch: prompt
chunks through the model's forward (over a view of the paged cache), and every decoding sequence's
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
        for seq, n in batch.prefills:
            start = seq.num_computed
            logits = self.forward(seq.token_ids[start : start + n], range(start, start + n), self._table(seq))
            results.append((seq, n, logits[-1]))
        if batch.decodes:
            seqs = batch.decodes
            tokens = [seq.token_ids[seq.num_computed] for seq in seqs]
            positions = [seq.num_computed for seq in seqs]
            logits = self.decode(tokens, positions, [self._table(seq) for seq in seqs])
            results.extend((seq, 1, row) for seq, row in zip(seqs, logits, strict=True))
        return results

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
