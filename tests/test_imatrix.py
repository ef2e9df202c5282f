"""The importance matrix: what the collector sums (checked against the first layer's inputs computed in NumPy),
the GGUF file in llama.cpp's layout read back, `mistral imatrix` and `mistral quantize --imatrix` end to end, and
their bad inputs."""

import json
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGUFReader

pytestmark = pytest.mark.slow
MISTRAL = [sys.executable, "-m", "mistralcli"]
WORDS = "the of and to in is was that for on as with by at from his her they which this be are or an".split()


def run(*args):
    return subprocess.run([*MISTRAL, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calibration.txt"
    path.write_text(" ".join(np.random.default_rng(0).choice(WORDS, 330)))
    return path


def test_the_sums_are_the_squared_inputs_of_each_matrix(smollm2, calibration):
    from mistralcli.quantize.imatrix import collect

    ctx = 128
    stats, ppl = collect(smollm2, calibration.read_text(), ctx)
    assert stats.chunk_count == ppl.windows >= 2 and stats.chunk_size == ctx
    names = set(stats.sums)
    assert {f"blk.{i}.{m}.weight" for i in (0, 29) for m in ("attn_q", "attn_v", "ffn_down")} <= names
    assert "output.weight" not in names and "token_embd.weight" not in names
    # layer 0's attention input in NumPy: the RMS-normed embeddings of the windows' tokens (BOS first in each)
    tok = smollm2.tokenizer
    tokens = tok.encode(calibration.read_text(), add_special=True, parse_special=False)
    embed = smollm2.model.weights["token_embd.weight"]
    norm = smollm2.model.weights["blk.0.attn_norm.weight"].dequantize().astype(np.float64)
    expected = np.zeros(embed.shape[1])
    table = embed.dequantize()
    for w in range(ppl.windows):
        ids = np.array(tokens[w * ctx : (w + 1) * ctx])
        if tok.add_bos:
            ids[0] = tok.bos_token_id
        x = table[ids].astype(np.float64)
        x = x / np.sqrt((x**2).mean(axis=1, keepdims=True) + smollm2.model.args.rms_norm_eps) * norm
        expected += (x**2).sum(axis=0)
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"):
        assert stats.counts[name].tolist() == [ppl.windows * ctx]
        np.testing.assert_allclose(stats.sums[name][0], expected, rtol=1e-4)
    importance = stats.importance()
    assert importance["blk.0.attn_q.weight"].shape == (embed.shape[1],)
    np.testing.assert_allclose(importance["blk.0.attn_q.weight"], expected / (ppl.windows * ctx), rtol=1e-4)


def test_the_file_has_llama_cpps_layout_and_reads_back(tmp_path):
    from mistralcli.quantize.imatrix import Imatrix, load, save

    rng = np.random.default_rng(1)
    stats = Imatrix(
        sums={"blk.0.ffn_up.weight": rng.random((1, 64)) * 100, "blk.0.ffn_up_exps.weight": rng.random((4, 64))},
        counts={"blk.0.ffn_up.weight": np.array([512]), "blk.0.ffn_up_exps.weight": np.array([10, 0, 3, 7])},
        datasets=["calibration.txt"],
        chunk_count=2,
        chunk_size=256,
    )
    path = tmp_path / "imatrix.gguf"
    save(stats, path)
    reader = GGUFReader(path)
    assert reader.fields["general.type"].contents() == "imatrix" and "general.architecture" not in reader.fields
    assert reader.fields["imatrix.datasets"].contents() == ["calibration.txt"]
    assert (
        reader.fields["imatrix.chunk_count"].contents() == 2 and reader.fields["imatrix.chunk_size"].contents() == 256
    )
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["blk.0.ffn_up_exps.weight.in_sum2"].shape.tolist() == [64, 4]  # ne0 = columns, ne1 = experts
    assert tensors["blk.0.ffn_up_exps.weight.counts"].shape.tolist() == [1, 4]
    back = load(path)
    importance = back.importance()
    np.testing.assert_allclose(importance["blk.0.ffn_up.weight"], stats.sums["blk.0.ffn_up.weight"][0] / 512, rtol=1e-6)
    experts = importance["blk.0.ffn_up_exps.weight"]
    assert experts.shape == (4, 64) and (experts[1] == 1).all()  # no token reached expert 1: importance 1
    np.testing.assert_allclose(experts[3], stats.sums["blk.0.ffn_up_exps.weight"][3] / 7, rtol=1e-6)


def test_imatrix_then_quantize_with_it(smollm2_path, calibration, tmp_path):
    matrix = tmp_path / "imatrix.gguf"
    made = run("imatrix", "-m", str(smollm2_path), "-f", str(calibration), "-o", str(matrix), "--ctx", "128", "--json")
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["matrices"] == 30 * 7 and summary["windows"] >= 2 and summary["ppl"] > 1
    again = run("imatrix", "-m", str(smollm2_path), "-f", str(calibration), "-o", str(matrix))
    assert again.returncode == 2 and "exists (--force replaces it)" in again.stderr
    out = tmp_path / "q4_k_m.gguf"
    done = run("quantize", "-m", str(smollm2_path), "--type", "Q4_K_M", "--imatrix", str(matrix), "-o", str(out))
    assert done.returncode == 0, done.stderr
    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.quantize import gguf_file, policy

    source = open_gguf(smollm2_path)
    plain = tmp_path / "plain.gguf"
    gguf_file.write(source, gguf_file.plan(source, policy.MIXES["Q4_K_M"]), policy.MIXES["Q4_K_M"], plain)
    weighted = {t.name: np.asarray(t.data) for t in GGUFReader(out).tensors}
    unweighted = {t.name: np.asarray(t.data) for t in GGUFReader(plain).tensors}
    types = {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}
    assert (types["blk.0.ffn_down.weight"], types["blk.0.ffn_up.weight"], types["blk.0.attn_v.weight"]) == (
        "Q6_K",
        "Q5_0",
        "Q8_0",
    )
    assert not np.array_equal(weighted["blk.0.ffn_down.weight"], unweighted["blk.0.ffn_down.weight"])
    assert not np.array_equal(weighted["blk.0.ffn_up.weight"], unweighted["blk.0.ffn_up.weight"])
    assert np.array_equal(weighted["blk.0.attn_v.weight"], unweighted["blk.0.attn_v.weight"])


def test_bad_imatrix_files_are_usage_errors(smollm2_path, tmp_path):
    from mistralcli.quantize.imatrix import Imatrix, save

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf" * 20)
    other = tmp_path / "other.gguf"
    save(Imatrix({"blk.0.ffn_down.weight": np.ones((1, 7))}, {"blk.0.ffn_down.weight": np.array([1])}), other)
    stranger = tmp_path / "stranger.gguf"
    save(Imatrix({"blk.0.ssm_x.weight": np.ones((1, 8))}, {"blk.0.ssm_x.weight": np.array([1])}), stranger)
    for path, needle in (
        (junk, "not a GGUF imatrix"),
        (smollm2_path, "not an imatrix"),
        (other, "has 7 columns there and 1536 in the model"),
        (stranger, "none of this model's matrices is in it"),
    ):
        out = tmp_path / "out.gguf"
        result = run("quantize", "-m", str(smollm2_path), "--type", "Q4_K_M", "--imatrix", str(path), "-o", str(out))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert needle in " ".join(line.strip("│╭╮╰╯─ ") for line in result.stderr.splitlines())
        assert not out.exists()
