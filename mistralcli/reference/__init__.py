"""The NumPy references every fast kernel is tested against: the ops (`ops.py`, float32 throughout) and
the KV block pool (`block_pool.py`). Tests import them; production code runs the compiled kernels."""
