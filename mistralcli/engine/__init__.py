"""The engine: requests, the scheduler, the paged KV cache's block accounting."""
