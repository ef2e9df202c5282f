import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from model_fetcher import FetchError, fetch

pytest_plugins = ["sandbox_tree", "tool_loop_server"]  # the agent tools' sandbox, the tool loop's server

_fetched: dict[str, Path | str] = {}


def model_path(model_id: str) -> Path:
    """The real test model's path, fetched once per session; the test is skipped if it cannot be had."""
    if model_id not in _fetched:
        try:
            _fetched[model_id] = fetch(model_id)
        except (FetchError, OSError, StopIteration) as exc:
            _fetched[model_id] = f"test model {model_id} unavailable: {exc}"
    result = _fetched[model_id]
    if isinstance(result, str):
        pytest.skip(result)
    return result


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return model_path("smollm2")


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    return model_path("qwen2.5-coder")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return model_path("gemma3")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """sentence-transformers' all-MiniLM-L6-v2, a model directory (BERT, mean pooling, normalised)."""
    return model_path("all-minilm")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    from mistralcli.loading.loader import load_model

    return load_model(str(smollm2_path))


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_path, tmp_path_factory):
    """SmolLM2 as a float16 Hugging Face checkpoint with its tokenizer (tests/hf_from_gguf.py)."""
    from hf_from_gguf import export_hf

    return export_hf(smollm2_path, tmp_path_factory.mktemp("smollm2-hf"))
