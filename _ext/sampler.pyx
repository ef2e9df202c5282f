# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Token sampling: penalties, temperature, top-k, top-p, min-p and a seeded RNG, in one nogil call.

The NumPy reference with the same signature and the same steps is `mistralcli.sampling.sample_reference`;
keep the two in step (tests/test_sampling.py checks they pick the same tokens).

Steps, all in float64:
  0. token_mask (the grammar's, one bit per token id, int32 words as llguidance writes them): tokens
     whose bit is 0 are never sampled (-inf). When the mask leaves no token, -1 is returned.
  1. penalties over history_ids: repetition (llama.cpp/HF: positive logits divided, negative
     multiplied), then frequency (count * f) and presence (p if seen) subtracted (OpenAI).
  2. temperature <= 0: argmax (lowest id on ties), no RNG draw.
  3. logits / temperature; candidates are the tokens within CUTOFF of the best scaled logit
     (probability ratio e^-30: such tokens are never sampled).
  4. candidates sorted by (logit desc, id asc); keep top_k (0 = all). (With top_k, a heap picks the
     k first and only those are sorted: the same set and order, without sorting the vocabulary.)
     With no top-k, top-p or min-p nothing is cut off, and the candidates stay in id order.
  5. softmax over the candidates. typical_p < 1 (locally typical sampling, as transformers): keep
     the candidates whose -log p is closest to the entropy, fewest first, until their mass reaches
     typical_p (ties by the step-4 order), and leave them in the step-4 order. Then keep the
     shortest prefix whose mass reaches top_p; keep those with p >= min_p * p_max.
  6. draw u in [0, 1) from splitmix64(rng_state) and walk the cumulative mass.

DRY ("don't repeat yourself") penalties are computed before, by `dry_penalties`, and subtracted
from the logits by the caller.
"""

from libc.math cimport exp, fabs, log, pow
from libc.stdlib cimport malloc, free, qsort
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef double CUTOFF = 30.0

cdef struct Candidate:
    double logit
    int64_t token_id


cdef struct Ranked:
    double key
    Py_ssize_t index


cdef int _compare_ranked(const void* a, const void* b) noexcept nogil:
    cdef const Ranked* x = <const Ranked*>a
    cdef const Ranked* y = <const Ranked*>b
    if x.key < y.key:
        return -1
    if x.key > y.key:
        return 1
    return -1 if x.index < y.index else (1 if x.index > y.index else 0)


cdef int _compare(const void* a, const void* b) noexcept nogil:
    cdef const Candidate* x = <const Candidate*>a
    cdef const Candidate* y = <const Candidate*>b
    if x.logit > y.logit:
        return -1
    if x.logit < y.logit:
        return 1
    return -1 if x.token_id < y.token_id else (1 if x.token_id > y.token_id else 0)


cdef inline void _sift_down(Candidate* heap, Py_ssize_t size, Py_ssize_t i) noexcept nogil:
    # heap order: the root is the candidate that sorts last (the worst kept so far)
    cdef Py_ssize_t child
    cdef Candidate tmp
    while True:
        child = 2 * i + 1
        if child >= size:
            return
        if child + 1 < size and _compare(&heap[child + 1], &heap[child]) > 0:
            child += 1
        if _compare(&heap[child], &heap[i]) <= 0:
            return
        tmp = heap[i]
        heap[i] = heap[child]
        heap[child] = tmp
        i = child


cdef void _select_best(Candidate* cand, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Move the k candidates that sort first (logit desc, id asc) to cand[:k], in any order."""
    cdef Py_ssize_t i
    for i in range(k // 2 - 1, -1, -1):
        _sift_down(cand, k, i)
    for i in range(k, n):
        if _compare(&cand[i], &cand[0]) < 0:
            cand[0] = cand[i]
            _sift_down(cand, k, 0)


cdef inline uint64_t _splitmix64(uint64_t* state) noexcept nogil:
    state[0] += <uint64_t>0x9E3779B97F4A7C15
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


def uniform(uint64_t[::1] rng_state):
    """Next double in [0, 1) from the splitmix64 state (advances it)."""
    return (_splitmix64(&rng_state[0]) >> 11) * (1.0 / 9007199254740992.0)


def sample(const float[::1] logits, const int64_t[::1] history_ids, double temperature, int top_k,
           double top_p, double min_p, double repetition_penalty, double presence_penalty,
           double frequency_penalty, uint64_t[::1] rng_state, double typical_p=1.0,
           const int32_t[::1] token_mask=None):
    """Return one token id sampled from logits (V,); rng_state (1,) uint64 is advanced in place.
    token_mask ((V + 31) // 32,) int32, or None: bit i of word i // 32 allows token i; -1 when none is."""
    cdef Py_ssize_t vocab = logits.shape[0]
    cdef const int32_t* mask = NULL
    if token_mask is not None:
        if token_mask.shape[0] * 32 < vocab:
            raise ValueError(f"token_mask has {token_mask.shape[0]} words; {vocab} tokens need {(vocab + 31) // 32}")
        mask = &token_mask[0]
    cdef int64_t result
    cdef double* work = <double*>malloc(vocab * sizeof(double))
    cdef int* counts = <int*>malloc(vocab * sizeof(int))
    cdef Candidate* cand = <Candidate*>malloc(vocab * sizeof(Candidate))
    cdef Ranked* ranked = <Ranked*>malloc(vocab * sizeof(Ranked))
    if work == NULL or counts == NULL or cand == NULL or ranked == NULL:
        free(work); free(counts); free(cand); free(ranked)
        raise MemoryError()
    with nogil:
        result = _sample(logits, history_ids, temperature, top_k, top_p, min_p, repetition_penalty,
                         presence_penalty, frequency_penalty, typical_p, &rng_state[0], work, counts, cand,
                         ranked, mask)
    free(work)
    free(counts)
    free(cand)
    free(ranked)
    return result


def dry_penalties(const int64_t[::1] history_ids, double multiplier, double base, int allowed_length,
                  const unsigned char[::1] is_breaker, double[::1] penalties):
    """DRY: for every earlier place where the tokens just before it repeat the end of the history,
    the token that followed there is penalised multiplier * base^(length - allowed_length), length
    being how many tokens repeat (at least allowed_length; a sequence breaker ends a repeat). The
    largest penalty per token is written into penalties (V,), which must start at 0."""
    cdef Py_ssize_t n = history_ids.shape[0], vocab = penalties.shape[0], i, length
    cdef int64_t last, follower
    cdef double value
    if n < 2 or multiplier <= 0.0:
        return
    last = history_ids[n - 1]
    if last < 0 or last >= vocab or is_breaker[last]:
        return
    with nogil:
        for i in range(n - 2, -1, -1):  # history[i] is a candidate end of an earlier repeat
            if history_ids[i] != last:
                continue
            length = 0
            while length <= i and history_ids[i - length] == history_ids[n - 1 - length]:
                if history_ids[i - length] < 0 or history_ids[i - length] >= vocab or is_breaker[history_ids[i - length]]:
                    break
                length += 1
            if length < allowed_length:
                continue
            follower = history_ids[i + 1]
            if follower < 0 or follower >= vocab:
                continue
            value = multiplier * pow(base, <double>(length - allowed_length))
            if value > penalties[follower]:
                penalties[follower] = value


cdef int64_t _sample(const float[::1] logits, const int64_t[::1] history_ids, double temperature,
                     int top_k, double top_p, double min_p, double repetition_penalty,
                     double presence_penalty, double frequency_penalty, double typical_p, uint64_t* rng_state,
                     double* work, int* counts, Candidate* cand, Ranked* ranked,
                     const int32_t* mask) noexcept nogil:
    cdef Py_ssize_t vocab = logits.shape[0]
    cdef Py_ssize_t n_hist = history_ids.shape[0]
    cdef Py_ssize_t i, n, keep
    cdef int64_t tok
    cdef double best, total, cum, u, p_max, x, entropy, prob
    cdef double neg_inf = -1.0 / 0.0
    for i in range(vocab):
        work[i] = logits[i]
    cdef uint32_t word
    cdef Py_ssize_t w, end
    if mask != NULL:  # word by word: a grammar allows few tokens, so most words are 0
        for w in range((vocab + 31) >> 5):
            word = <uint32_t>mask[w]
            if word == <uint32_t>0xFFFFFFFFu:
                continue
            end = min(32 * w + 32, vocab)
            for i in range(32 * w, end):
                if not ((word >> (i & 31)) & 1):
                    work[i] = neg_inf
    if n_hist > 0 and (repetition_penalty != 1.0 or presence_penalty != 0.0 or frequency_penalty != 0.0):
        for i in range(vocab):
            counts[i] = 0
        for i in range(n_hist):
            tok = history_ids[i]
            if 0 <= tok < vocab:
                counts[tok] += 1
        for i in range(vocab):
            if counts[i] > 0:
                if repetition_penalty != 1.0:
                    if work[i] > 0:
                        work[i] = work[i] / repetition_penalty
                    else:
                        work[i] = work[i] * repetition_penalty
                work[i] = work[i] - counts[i] * frequency_penalty - presence_penalty
    best = work[0]
    n = 0
    for i in range(1, vocab):
        if work[i] > best:
            best = work[i]
            n = i
    if best == neg_inf:  # only where a mask (or -inf logits) leaves nothing
        return -1
    if temperature <= 0.0:
        return n
    best = best / temperature
    n = 0
    for i in range(vocab):
        x = work[i] / temperature
        if x >= best - CUTOFF:
            cand[n].logit = x
            cand[n].token_id = i
            n += 1
    if top_k > 0 and top_k < n:  # keep the top_k best first (a heap: O(V log k), not a sort of V)
        _select_best(cand, n, top_k)
        n = top_k
    if top_k > 0 or top_p < 1.0 or min_p > 0.0 or typical_p < 1.0:  # nothing is cut off otherwise: id order
        qsort(cand, n, sizeof(Candidate), _compare)
    total = 0.0
    for i in range(n):
        work[i] = exp(cand[i].logit - best)
        total += work[i]
    if typical_p < 1.0 and n > 1:
        entropy = 0.0
        for i in range(n):
            prob = work[i] / total
            if prob > 0.0:
                entropy -= prob * log(prob)
        for i in range(n):
            prob = work[i] / total
            ranked[i].key = fabs(-log(prob) - entropy) if prob > 0.0 else 1e300
            ranked[i].index = i
        qsort(ranked, n, sizeof(Ranked), _compare_ranked)
        cum = 0.0
        keep = n
        for i in range(n):
            cum += work[ranked[i].index] / total
            if cum >= typical_p:
                keep = i + 1
                break
        for i in range(keep, n):  # out of the typical set: weight 0, compacted away below
            work[ranked[i].index] = -1.0
        keep = 0
        for i in range(n):
            if work[i] >= 0.0:
                work[keep] = work[i]
                cand[keep] = cand[i]
                keep += 1
        n = keep
        total = 0.0
        for i in range(n):
            total += work[i]
    keep = n
    if top_p < 1.0:
        cum = 0.0
        for i in range(n):
            cum += work[i] / total
            if cum >= top_p:
                keep = i + 1
                break
    if min_p > 0.0:
        p_max = work[0] / total
        for i in range(1, keep):
            if work[i] / total < min_p * p_max:
                keep = i
                break
    total = 0.0
    for i in range(keep):
        total += work[i]
    u = ((_splitmix64(rng_state) >> 11) * (1.0 / 9007199254740992.0)) * total
    cum = 0.0
    for i in range(keep):
        cum += work[i]
        if u < cum:
            return cand[i].token_id
    return cand[keep - 1].token_id
