"""SmolLM2-135M-Instruct Q4_1 against transformers on the same GGUF (dequantized to float32):
logits of the top tokens within 0.1 (we aim to be the float model) and equal greedy continuations."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from paged import OneSequence  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "List three colors of the rainbow.",
    "Explain gravity to a child in one sentence.",
]
NUM_TOKENS = 32
TOP_TOKENS = 10
MAX_LOGIT_DIFF = 0.1


@pytest.fixture(scope="module")
def hf_model(smollm2_path):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32
    )
    model.eval()
    return model


def chat_ids(loaded, prompt):
    text = loaded.chat_template.render([{"role": "user", "content": prompt}])
    return loaded.tokenizer.encode(text, add_special=False)


def greedy_ours(loaded, ids, steps):
    cache = OneSequence(loaded.model)
    logits = cache.forward(np.array(ids), np.arange(len(ids)))[-1]
    out, rows = [], []
    for _ in range(steps):
        rows.append(logits)
        out.append(int(np.argmax(logits)))
        logits = cache.forward(np.array(out[-1:]), np.array([len(ids) + len(out) - 1]))[-1]
    return out, np.stack(rows)


def test_greedy_continuations_and_logits_match_transformers(smollm2, hf_model):
    for prompt in PROMPTS:
        ids = chat_ids(smollm2, prompt)
        ours, our_rows = greedy_ours(smollm2, ids, NUM_TOKENS)
        with torch.no_grad():
            full = torch.tensor([ids + ours])
            theirs_rows = hf_model(full).logits[0, len(ids) - 1 : len(ids) - 1 + NUM_TOKENS].numpy()
        theirs = theirs_rows.argmax(-1).tolist()
        for step, (row, ref) in enumerate(zip(our_rows, theirs_rows, strict=True)):
            top = np.argsort(ref)[-TOP_TOKENS:]
            diff = np.abs(row[top] - ref[top]).max()
            assert diff < MAX_LOGIT_DIFF, f"{prompt!r} step {step}: top-token logits differ by {diff:.4f}"
        assert ours == theirs, f"{prompt!r}: greedy continuation differs"
    answer = smollm2.tokenizer.decode(greedy_ours(smollm2, chat_ids(smollm2, PROMPTS[0]), 12)[0])
    assert "Paris" in answer
