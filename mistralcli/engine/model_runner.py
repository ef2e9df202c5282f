"""ModelRunner: the only part of the engine that touches arrays. Runs one scheduled batch: prompt
chunks through the model's forward (the GEMM prefill path, over a view of the paged cache), and every
decoding sequence's next token through one batched C decode step.

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
        fused = getattr(model, "fused_decoder", None)
        self.step = fused.step if fused is not None else None  # else: decode through forward
        if hasattr(model.ops, "batch_invariant"):
            model.ops.batch_invariant = True

    def execute(self, batch: ScheduledBatch) -> list[tuple[Sequence, int, np.ndarray]]:
        """(sequence, tokens computed, logits (V,) after its last token) for each scheduled sequence."""
        self.cache.copy_blocks(batch.copies)
        results = []
        for seq, n in batch.prefills:
            start = seq.num_computed
            view = self.cache.view(self.blocks.block_table(seq.seq_id))
            logits = self.model.forward(np.asarray(seq.token_ids[start : start + n]), np.arange(start, start + n), view)
            results.append((seq, n, logits[-1]))
        if batch.decodes:
            for seq, logits in zip(batch.decodes, self._decode(batch.decodes), strict=True):
                results.append((seq, 1, logits))
        return results

    def _decode(self, seqs: list[Sequence]) -> np.ndarray:
        """logits (B, V) of each sequence's token at position num_computed."""
        tokens = np.array([seq.token_ids[seq.num_computed] for seq in seqs], dtype=np.int64)
        positions = np.array([seq.num_computed for seq in seqs], dtype=np.int64)
        logits = np.empty((len(seqs), self.vocab_size), dtype=np.float32)
        if self.step is None:
            for i, seq in enumerate(seqs):
                view = self.cache.view(self.blocks.block_table(seq.seq_id))
                logits[i] = self.model.forward(tokens[i : i + 1], positions[i : i + 1], view)[-1]
            return logits
        tables = [self.blocks.block_table(seq.seq_id) for seq in seqs]
        block_tables = np.zeros((len(seqs), max(len(t) for t in tables)), dtype=np.int32)
        for i, table in enumerate(tables):
            block_tables[i, : len(table)] = table
        self.step.decode(tokens, positions, block_tables, self.cache.k, self.cache.v, logits)
        return logits
