"""One sequence in a paged cache, computed by the engine's ModelRunner: the tests' way to run a model
token by token as the engine does (prompt chunks through forward, single tokens through the ops'
decode step where the model has one), without a scheduler in between."""

import numpy as np

from mistralcli.engine.block_manager import BlockManager
from mistralcli.engine.model_runner import ModelRunner
from mistralcli.engine.paged_cache import PagedKVCache


class OneSequence:
    """forward(token_ids (T,), positions (T,)) -> logits (T, V) if all_logits else (1, V); the keys and
    values stay in the cache for the next call. capacity: the most positions it holds; dtype: the cache's
    (float32, or float16 as EngineConfig's kv_cache_dtype "f16")."""

    def __init__(self, model, capacity: int = 512, block_size: int = 16, dtype=np.float32):
        a = model.args
        num_blocks = -(-capacity // block_size)
        self.cache = PagedKVCache(a.num_hidden_layers, num_blocks, block_size, a.num_key_value_heads, a.head_dim, dtype)
        self.runner = ModelRunner(model, self.cache, BlockManager(num_blocks, block_size))
        self.block_table = list(range(num_blocks))[::-1]  # the blocks in reverse: nothing relies on order
        self.num_tokens = 0

    def forward(self, token_ids, positions, all_logits: bool = False) -> np.ndarray:
        token_ids, positions = np.asarray(token_ids), np.asarray(positions, dtype=np.int64)
        if len(token_ids) == 1 and not all_logits:
            logits = self.runner.decode(token_ids, positions, [self.block_table])
        else:
            logits = self.runner.forward(token_ids, positions, self.block_table, all_logits)
        self.num_tokens = max(self.num_tokens, int(positions.max()) + 1)
        return logits
