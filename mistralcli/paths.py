"""Where mistralcli keeps files: platformdirs' per-user directories, never site-packages."""

import os
from pathlib import Path

import platformdirs

APP_NAME = "mistralcli"


def cache_dir() -> Path:
    """The user cache directory (Numba cache, downloaded and test models); MISTRALCLI_CACHE overrides."""
    override = os.environ.get("MISTRALCLI_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME))


def numba_cache_dir() -> Path:
    return cache_dir() / "numba"


def models_dir() -> Path:
    return cache_dir() / "models"
