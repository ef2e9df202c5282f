# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Token sampling: penalties, temperature, top-k, top-p, min-p and a seeded RNG, in one nogil call.

The NumPy reference with the same signature and the same steps is `mistralcli.sampling.sample_reference`;
keep the two in step (tests/test_sampling.py checks they pick the same tokens).

Steps, all in float64:
  1. penalties over history_ids: repetition (llama.cpp/HF: positive logits divided, negative
     multiplied), then frequency (count * f) and presence (p if seen) subtracted (OpenAI).
  2. temperature <= 0: argmax (lowest id on ties), no RNG draw.
  3. logits / temperature; candidates are the tokens within CUTOFF of the best scaled logit
     (probability ratio e^-30: such tokens are never sampled).
  4. candidates sorted by (logit desc, id asc); keep top_k (0 = all). (With top_k, a heap picks the
     k first and only those are sorted: the same set and order, without sorting the vocabulary.)
     With no top-k, top-p or min-p nothing is cut off, and the candidates stay in id order.
  5. softmax over the candidates; keep the shortest prefix whose mass reaches top_p; keep those
     with p >= min_p * p_max.
  6. draw u in [0, 1) from splitmix64(rng_state) and walk the cumulative mass.
"""

from libc.math cimport exp
from libc.stdlib cimport malloc, free, qsort
from libc.stdint cimport uint64_t, int64_t

cdef double CUTOFF = 30.0

cdef struct Candidate:
    double logit
    int64_t token_id


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
           double frequency_penalty, uint64_t[::1] rng_state):
    """Return one token id sampled from logits (V,); rng_state (1,) uint64 is advanced in place."""
    cdef Py_ssize_t vocab = logits.shape[0]
    cdef int64_t result
    cdef double* work = <double*>malloc(vocab * sizeof(double))
    cdef int* counts = <int*>malloc(vocab * sizeof(int))
    cdef Candidate* cand = <Candidate*>malloc(vocab * sizeof(Candidate))
    if work == NULL or counts == NULL or cand == NULL:
        free(work); free(counts); free(cand)
        raise MemoryError()
    with nogil:
        result = _sample(logits, history_ids, temperature, top_k, top_p, min_p, repetition_penalty,
                         presence_penalty, frequency_penalty, &rng_state[0], work, counts, cand)
    free(work)
    free(counts)
    free(cand)
    return result


cdef int64_t _sample(const float[::1] logits, const int64_t[::1] history_ids, double temperature,
                     int top_k, double top_p, double min_p, double repetition_penalty,
                     double presence_penalty, double frequency_penalty, uint64_t* rng_state,
                     double* work, int* counts, Candidate* cand) noexcept nogil:
    cdef Py_ssize_t vocab = logits.shape[0]
    cdef Py_ssize_t n_hist = history_ids.shape[0]
    cdef Py_ssize_t i, n, keep
    cdef int64_t tok
    cdef double best, total, cum, u, p_max, x
    for i in range(vocab):
        work[i] = logits[i]
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
    if top_k > 0 or top_p < 1.0 or min_p > 0.0:  # nothing is cut off otherwise: walk in id order
        qsort(cand, n, sizeof(Candidate), _compare)
    total = 0.0
    for i in range(n):
        work[i] = exp(cand[i].logit - best)
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
