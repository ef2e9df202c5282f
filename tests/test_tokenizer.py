"""Token ids equal llama.cpp's for the same GGUF (recorded with llama-cpp-python 0.3.36, and live
when llama_cpp is installed), for byte-level BPE (smollm, qwen2) and SentencePiece (gemma)."""

import json
from pathlib import Path

import pytest

from mistralcli.loading.gguf_file import open_gguf
from mistralcli.tokenizer import Tokenizer

RECORDED = json.loads((Path(__file__).parent / "data" / "llama_cpp_token_ids.json").read_text())
TEXTS = RECORDED["texts"]


@pytest.fixture(scope="module", params=["smollm2", "qwen2.5-coder", "gemma3"])
def gguf_tokenizer(request):
    from conftest import model_path

    path = model_path(request.param)
    gguf = open_gguf(path)
    return path, Tokenizer.from_gguf_metadata(gguf.metadata, path)


def test_ids_equal_recorded_llama_cpp(gguf_tokenizer):
    path, tok = gguf_tokenizer
    expected = RECORDED["ids"][path.name]
    for text, ids in zip(TEXTS, expected, strict=True):
        assert tok.encode(text) == ids, text


def test_ids_equal_live_llama_cpp(gguf_tokenizer):
    llama_cpp = pytest.importorskip("llama_cpp")
    path, tok = gguf_tokenizer
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    extra = ["x" * 50, " \n \n", "ÀÁÂÃÄÅ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "''' \"\"\" ```python\nprint(1)\n```", "a  b   c    d"]
    for text in TEXTS + extra:
        assert tok.encode(text) == llm.tokenize(text.encode(), add_bos=True, special=True), text


def test_roundtrip_plain_text(gguf_tokenizer):
    _, tok = gguf_tokenizer
    for text in TEXTS:
        if "<" in text:  # control tokens are dropped when decoding with skip_special
            continue
        ids = tok.encode(text, add_special=False)
        assert tok.decode(ids) == text


def test_special_tokens_are_parsed_only_when_asked(smollm2_path):
    tok = Tokenizer.from_gguf_metadata(open_gguf(smollm2_path).metadata)
    assert tok.encode("<|im_start|>", add_special=False) == [1]
    literal = tok.encode("<|im_start|>", add_special=False, parse_special=False)
    assert 1 not in literal and tok.decode(literal) == "<|im_start|>"


def test_bos_eos_and_eog_from_metadata(smollm2_path, gemma_path):
    smol = Tokenizer.from_gguf_metadata(open_gguf(smollm2_path).metadata)
    assert (smol.bos_token_id, smol.eos_token_id, smol.add_bos) == (1, 2, False)
    assert {0, 2} <= smol.eog_token_ids  # <|endoftext|> and <|im_end|>
    assert smol.encode("Hi")[0] != 1
    gemma = Tokenizer.from_gguf_metadata(open_gguf(gemma_path).metadata)
    assert gemma.add_bos and gemma.encode("Hi")[0] == 2
    assert gemma.encode("Hi", add_special=False)[0] != 2
    assert 106 in gemma.eog_token_ids  # <end_of_turn>


def test_decode_joins_bytes_split_over_tokens(smollm2_path):
    tok = Tokenizer.from_gguf_metadata(open_gguf(smollm2_path).metadata)
    ids = tok.encode("🤖", add_special=False)
    assert len(ids) > 1  # the emoji's four bytes are spread over several tokens
    assert tok.decode(ids) == "🤖"


def test_tokenizer_json_matches_gguf(tmp_path, smollm2_path):
    """A tokenizer.json (written by transformers from the same GGUF) gives llama.cpp's ids too."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    hf.save_pretrained(tmp_path)
    tok = Tokenizer.from_directory(tmp_path)
    expected = RECORDED["ids"][smollm2_path.name]
    for text, ids in zip(TEXTS, expected, strict=True):
        assert tok.encode(text) == ids, text
    assert tok.eos_token == "<|im_end|>"
