"""The Cython sampler against its NumPy reference, and the properties users rely on."""

import dataclasses

import numpy as np
import pytest

from mistralcli._ext import sampler
from mistralcli.reference.sampling import _splitmix64_uniform, dry_penalties_reference, sample_reference
from mistralcli.sampling import (
    SamplingParams,
    dry_breaker_mask,
    process_logits,
    recommended_sampling,
    rng_state,
    sample,
)

SETTINGS = [
    # temperature, top_k, top_p, min_p, repetition, presence, frequency
    (0.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0),
    (0.0, 0, 1.0, 0.0, 1.3, 0.5, 0.2),
    (1.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0),
    (0.7, 40, 0.95, 0.05, 1.0, 0.0, 0.0),
    (1.5, 5, 1.0, 0.0, 1.1, 0.0, 0.0),
    (1.0, 0, 0.5, 0.0, 1.0, 0.4, 0.3),
    (1.0, 0, 1.0, 0.2, 1.0, 0.0, 0.0),
    (0.3, 1000, 0.99, 0.01, 1.2, -0.5, 0.1),
]


@pytest.mark.parametrize("setting", SETTINGS)
def test_cython_matches_reference(setting):
    rng = np.random.default_rng(42)
    for trial in range(40):
        vocab = int(rng.integers(2, 3000))
        logits = (rng.standard_normal(vocab) * rng.uniform(0.5, 6)).astype(np.float32)
        history = rng.integers(0, vocab, int(rng.integers(0, 40)))
        fast, ref = rng_state(trial), rng_state(trial)
        got = [sampler.sample(logits, history, *setting, fast) for _ in range(8)]
        want = [sample_reference(logits, history, *setting, ref) for _ in range(8)]
        assert got == want
        assert fast[0] == ref[0]  # both advanced their RNG the same number of times


@pytest.mark.parametrize("typical_p", [0.2, 0.9, 0.999])
@pytest.mark.parametrize("top_k,top_p,min_p", [(0, 1.0, 0.0), (40, 0.9, 0.05)])
def test_typical_p_matches_reference(typical_p, top_k, top_p, min_p):
    rng = np.random.default_rng(int(typical_p * 1000) + top_k)
    for trial in range(30):
        vocab = int(rng.integers(2, 2000))
        logits = (rng.standard_normal(vocab) * rng.uniform(0.5, 5)).astype(np.float32)
        none = np.array([], np.int64)
        fast, ref = rng_state(trial), rng_state(trial)
        args = (1.0, top_k, top_p, min_p, 1.0, 0.0, 0.0)
        got = [sampler.sample(logits, none, *args, fast, typical_p) for _ in range(6)]
        assert got == [sample_reference(logits, none, *args, ref, typical_p) for _ in range(6)]


def test_typical_p_keeps_the_tokens_nearest_the_entropy():
    # probabilities 0.5, 0.3, 0.2: entropy 1.03 nats; -log p = 0.69, 1.20, 1.61: 0.3 is the most typical,
    # then 0.5; a typical mass of 0.75 keeps those two, and sampling never gives the third
    logits = np.log(np.array([0.5, 0.3, 0.2])).astype(np.float32)
    state = rng_state(0)
    drawn = {
        sampler.sample(logits, np.array([], np.int64), 1.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, state, 0.75) for _ in range(300)
    }
    assert drawn == {0, 1}


def test_dry_penalises_what_would_extend_a_repeat():
    # history: A B C D ... A B C -> D would repeat "A B C D": penalised for a repeat of length 3
    a, b, c, d, x = 1, 2, 3, 4, 5
    history = np.array([a, b, c, d, x, x, a, b, c], np.int64)
    breakers = np.zeros(10, np.uint8)
    penalties = np.zeros(10)
    sampler.dry_penalties(history, 0.8, 1.75, 2, breakers, penalties)
    assert penalties[d] == pytest.approx(0.8 * 1.75 ** (3 - 2)) and penalties.sum() == penalties[d]
    np.testing.assert_array_equal(penalties, dry_penalties_reference(history, 0.8, 1.75, 2, breakers, 10))
    breakers[b] = 1  # a breaker inside the repeat shortens it below the allowed length
    penalties[:] = 0
    sampler.dry_penalties(history, 0.8, 1.75, 2, breakers, penalties)
    assert not penalties.any()


def test_dry_matches_reference_on_random_histories():
    rng = np.random.default_rng(11)
    for _ in range(50):
        vocab = 12
        history = rng.integers(0, vocab, int(rng.integers(0, 80)))
        breakers = (rng.random(vocab) < 0.15).astype(np.uint8)
        allowed = int(rng.integers(1, 4))
        penalties = np.zeros(vocab)
        sampler.dry_penalties(history, 1.1, 1.5, allowed, breakers, penalties)
        np.testing.assert_allclose(
            penalties, dry_penalties_reference(history, 1.1, 1.5, allowed, breakers, vocab), rtol=1e-12
        )


def test_logit_bias_allowed_and_banned_tokens():
    logits = np.zeros(8, np.float32)
    params = SamplingParams(temperature=0, logit_bias={3: 5.0, 7: 100.0}, banned_token_ids=[7])
    assert sample(logits, params, [], rng_state(0))[0] == 3
    assert sample(logits, SamplingParams(temperature=1.0, allowed_token_ids=[2, 5]), [], rng_state(1))[0] in (2, 5)
    out = process_logits(logits, [], SamplingParams(allowed_token_ids=[1], logit_bias={1: 2.0}), None)
    assert out[1] == 2.0 and np.isneginf(out[[0, 2, 3, 4, 5, 6, 7]]).all()
    assert dry_breaker_mask(["a", "b\n", ":x", "y"], ["\n", ":"]).tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("top_k", [0, 1, 40, 3000])
def test_full_vocabulary_with_ties_matches_reference(top_k):
    """49,152 logits rounded to 0.1 (many ties): the heap selection and the id-order walk agree."""
    rng = np.random.default_rng(top_k)
    logits = np.round(rng.standard_normal(49152) * 2, 1).astype(np.float32)
    none = np.array([], np.int64)
    for top_p in (1.0, 0.9):
        fast, ref = rng_state(3), rng_state(3)
        got = [sampler.sample(logits, none, 1.0, top_k, top_p, 0.0, 1.0, 0.0, 0.0, fast) for _ in range(10)]
        assert got == [sample_reference(logits, none, 1.0, top_k, top_p, 0.0, 1.0, 0.0, 0.0, ref) for _ in range(10)]


def test_uniform_draws_match_reference_rng():
    fast, ref = rng_state(7), rng_state(7)

    draws = [sampler.uniform(fast) for _ in range(1000)]
    assert draws == [_splitmix64_uniform(ref) for _ in range(1000)]
    assert 0.0 <= min(draws) and max(draws) < 1.0
    assert abs(np.mean(draws) - 0.5) < 0.03


def test_greedy_is_argmax_and_draws_nothing():
    logits = np.array([0.1, 3.0, 2.9, 3.0], dtype=np.float32)
    state = rng_state(1)
    before = state.copy()
    assert sampler.sample(logits, np.array([], np.int64), 0.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, state) == 1
    assert state[0] == before[0]


def test_penalties_change_the_greedy_choice():
    logits = np.array([2.0, 1.9, -1.0], dtype=np.float32)
    history = np.array([0], dtype=np.int64)
    assert sampler.sample(logits, history, 0.0, 0, 1.0, 0.0, 1.1, 0.0, 0.0, rng_state(0)) == 1  # 2.0/1.1 < 1.9
    assert sampler.sample(logits, history, 0.0, 0, 1.0, 0.0, 1.0, 0.2, 0.0, rng_state(0)) == 1
    assert sampler.sample(logits, history, 0.0, 0, 1.0, 0.0, 1.0, 0.0, 0.05, rng_state(0)) == 0


def test_top_k_one_and_tiny_top_p_are_greedy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(500).astype(np.float32)
    best = int(np.argmax(logits))
    state = rng_state(3)
    none = np.array([], np.int64)
    assert {sampler.sample(logits, none, 2.0, 1, 1.0, 0.0, 1.0, 0.0, 0.0, state) for _ in range(50)} == {best}
    assert {sampler.sample(logits, none, 2.0, 0, 1e-9, 0.0, 1.0, 0.0, 0.0, state) for _ in range(50)} == {best}


def test_sampling_follows_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    state = rng_state(11)
    none = np.array([], np.int64)
    counts = np.bincount(
        [sampler.sample(logits, none, 1.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, state) for _ in range(20000)], minlength=3
    )
    np.testing.assert_allclose(counts / counts.sum(), [0.5, 0.3, 0.2], atol=0.015)


def test_same_seed_same_tokens():
    logits = np.random.default_rng(5).standard_normal(1000).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234)
    a, b, c = rng_state(params.seed), rng_state(params.seed), rng_state(4321)
    draws = [sample(logits, params, [], a)[0] for _ in range(50)]
    assert draws == [sample(logits, params, [], b)[0] for _ in range(50)]
    assert draws != [sample(logits, params, [], c)[0] for _ in range(50)]


def test_min_tokens_masks_the_stop_tokens_and_logprobs_come_with_the_token():
    logits = np.array([5.0, 1.0, 0.0, -1.0], np.float32)
    params = SamplingParams(temperature=0, min_tokens=2, logprobs=2)
    token, logprob = sample(logits, params, [], rng_state(0), num_output_tokens=1, stop_token_ids={0})
    assert token == 1 and logprob.token_id == 1 and [t for t, _ in logprob.top] == [1, 2]
    assert sample(logits, params, [], rng_state(0), num_output_tokens=2, stop_token_ids={0})[0] == 0
    assert sample(logits, SamplingParams(temperature=0), [], rng_state(0))[1] is None


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(top_k=-1),
        dict(min_p=2),
        dict(repetition_penalty=0),
        dict(presence_penalty=3),
        dict(typical_p=0),
        dict(logit_bias={1: 200}),
        dict(allowed_token_ids=[]),
        dict(dry_multiplier=-1),
        dict(dry_base=0.5),
        dict(dry_allowed_length=0),
        dict(max_tokens=0),
        dict(min_tokens=5, max_tokens=2),
        dict(stop=[""]),
        dict(logprobs=21),
        dict(stop_token_ids=[-1]),
    ],
)
def test_invalid_params_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_model_recommended_settings():
    metadata = {"general.sampling.temp": 0.6, "general.sampling.top_k": 20, "general.name": "x"}
    generation = {"temperature": 0.7, "top_p": 0.8, "do_sample": True, "top_k": None}
    assert recommended_sampling(metadata=metadata) == {"temperature": 0.6, "top_k": 20}
    assert recommended_sampling(generation_config=generation) == {"temperature": 0.7, "top_p": 0.8}
    assert recommended_sampling() == {}


FLOAT_FIELDS = [f.name for f in dataclasses.fields(SamplingParams) if f.type in (float, float | None)]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_non_finite_floats_are_rejected_naming_the_field(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be a finite number"):
        SamplingParams(**{name: value})


def test_non_finite_logit_bias_is_rejected():
    assert len(FLOAT_FIELDS) >= 9  # the walk above finds the float fields
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams(logit_bias={5: float("nan")})


def test_token_mask_allows_only_its_tokens_as_the_reference_does():
    from mistralcli.reference.sampling import unpack_mask

    rng = np.random.default_rng(7)
    vocab = 100
    logits = rng.normal(size=vocab).astype(np.float32)
    mask = np.zeros((vocab + 31) // 32, dtype=np.int32)
    allowed = [3, 31, 32, 63, 64, 99]
    for t in allowed:
        mask[t >> 5] |= np.int32(np.uint32(1 << (t & 31)).view(np.int32))
    assert list(np.nonzero(unpack_mask(mask, vocab))[0]) == allowed
    none = np.array([], np.int64)
    for setting in [(0.0, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0), (1.5, 3, 0.9, 0.05)]:
        fast, ref = rng_state(5), rng_state(5)
        got = [sampler.sample(logits, none, *setting, 1.0, 0.0, 0.0, fast, 1.0, mask) for _ in range(40)]
        assert got == [sample_reference(logits, none, *setting, 1.0, 0.0, 0.0, ref, 1.0, mask) for _ in range(40)]
        assert set(got) <= set(allowed)
    empty = np.zeros_like(mask)
    assert sampler.sample(logits, none, 1.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, rng_state(0), 1.0, empty) == -1
    assert sample_reference(logits, none, 1.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, rng_state(0), 1.0, empty) == -1
    with pytest.raises(ValueError, match="token_mask"):
        sampler.sample(logits, none, 1.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, rng_state(0), 1.0, mask[:2])
