"""`mistral chat`: the terminal chat, and its SQLite session store (store.py) and exports (export.py)."""
