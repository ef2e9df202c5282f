# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A llama-family decode step (all layers and the logits, a batch of sequences) in one C call:
kernels/llama_step.h. Legend: B sequences, L layers, NB blocks of BS slots, Hkv key/value heads,
D head dim, V vocabulary."""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free

import numpy as np

cdef extern from "kernels/llama_step.h" nogil:
    ctypedef float (*mcli_dot_fn)(const uint8_t *row, const int16_t *xq, const float *xscale,
                                  const float *xsum, int64_t nb)
    ctypedef float (*mcli_fdot_fn)(const uint8_t *row, const float *x, int64_t k)
    ctypedef void (*mcli_dot_multi_fn)(const uint8_t *row, const int16_t *xq, const float *xscale,
                                       const float *xsum, int64_t nb, int num_tokens, float *out,
                                       int64_t out_stride)
    int mcli_simd_level()
    int MCLI_ATTN_GROUP
    mcli_dot_fn mcli_select(int qtype, int level)
    mcli_dot_multi_fn mcli_select_multi(int qtype, int level)
    mcli_fdot_fn mcli_select_float(int qtype, int level)
    ctypedef void (*mcli_fmulti_fn)(const uint8_t *row, const float *x, int64_t k, int ntok, float *out,
                                    int64_t out_stride)
    mcli_fmulti_fn mcli_select_float_multi(int qtype, int level)
    ctypedef void (*mcli_rows_fn)(const uint8_t *w, int64_t row_bytes, int64_t nrows, const void *a, float *out,
                                  int64_t out_stride)
    mcli_rows_fn mcli_select_rows(int qtype, int level)
    ctypedef void (*mcli_tile_fn)(const uint8_t *tiles, int nrows, const int16_t *xq, int64_t xq_stride,
                                  const float *xs, const float *xm, int64_t xs_stride, int64_t nb, float *out,
                                  int64_t out_stride)
    const mcli_tile_fn *mcli_tile_kernels(int qtype, int level)
    ctypedef void (*mcli_ftile_fn)(const uint8_t *group, int nrows, const float *x, int64_t x_stride, int64_t k,
                                   float *out, int64_t out_stride)
    const mcli_ftile_fn *mcli_ftile_kernels(int qtype, int level)
    ctypedef struct mcli_weight:
        const uint8_t *data
        int qtype
        int64_t rows, cols, row_bytes
        mcli_dot_fn dot
        mcli_dot_multi_fn multi
        mcli_fdot_fn fdot
        mcli_fmulti_fn fmulti
        mcli_rows_fn rows_fn
        const uint8_t *tiles
        const mcli_tile_fn *tile_fns
        const mcli_ftile_fn *ftile_fns
    ctypedef struct mcli_layer:
        mcli_weight q, k, v, o, gate, up, down
        const float *attn_norm
        const float *ffn_norm
        const float *q_bias
        const float *k_bias
        const float *v_bias
        const float *o_bias
        const float *q_norm
        const float *k_norm
        const float *post_attn_norm
        const float *post_ffn_norm
        int window, rope
    ctypedef struct mcli_model:
        int num_layers, hidden, num_heads, num_kv_heads, head_dim, ffn, vocab, rope_interleaved, simd_level, act
        float eps, embed_scale, attn_scale
        const float *output_norm
        mcli_weight output
        mcli_weight embed
        const double *inv_freq[2]
        const mcli_layer *layers
    ctypedef struct mcli_scratch:
        float *h
        float *x
        float *q
        float *k
        float *v
        float *attn
        float *gate
        float *up
        float *scores
        float *cos_
        float *sin_
        int16_t *xq
        float *xs
        float *xm
        int32_t *xt
        float *xst
        float *xmt
        int64_t xq_stride, scores_stride
    ctypedef struct mcli_paged_kv:
        void *k
        void *v
        int kv16
        int64_t num_blocks, block_size, max_blocks
        const int32_t *block_tables
    void mcli_llama_decode(const mcli_model *m, int num_seqs, const int64_t *tokens, const int64_t *positions,
                           const mcli_paged_kv *kv, float *logits, const mcli_scratch *s, int num_threads)

FLOAT_TYPES = {0: np.float32, 1: np.float16, 30: np.uint16}  # F32, F16, BF16 (raw bits)
SUPPORTED_TYPES = tuple(FLOAT_TYPES) + (2, 3, 6, 7, 8, 12, 13, 14)  # and the block types of qdot.h
MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

include "kv_cache.pxi"


cdef const uint8_t *_bytes_of(object array):
    cdef const uint8_t[:, ::1] view = array
    return &view[0, 0]


cdef const float *_floats_of(object array):
    if array is None:
        return NULL
    cdef const float[::1] view = array
    return &view[0]


cdef class DecodeStep:
    """Holds the C view of a model's weights and the scratch buffers; `decode` runs one step for a batch."""

    cdef mcli_model model
    cdef mcli_layer *layers
    cdef mcli_scratch scratch
    cdef list keep  # the arrays the C structs point into
    cdef object buffers
    cdef int batch_capacity
    cdef int64_t scores_capacity
    cdef int simd_level
    cdef public int num_threads
    cdef object tiles_of

    def __cinit__(self):
        self.layers = NULL

    def __init__(self, args, layers, output_norm, output, embed, inv_freqs, int num_threads=1, int simd_level=-1, *,
                 attn_scale, embed_scale=1.0, act="silu", tiles=None):
        """args: DecoderArgs; layers: list of dicts of QuantTensor / float32 arrays and the per-layer
        "window" and "rope" (DecoderModel._layer); output, embed: QuantTensor; inv_freqs: one or two
        (D/2,) float64 rope frequency tables; act: "silu" or "gelu_tanh"; tiles: QuantTensor -> its rows in
        the tile layout of kernels/qtiles.h or None (CpuOps.tiles), which batches of sequences multiply."""
        self.keep = []
        self.tiles_of = tiles
        self.num_threads = num_threads
        self.simd_level = mcli_simd_level() if simd_level < 0 else simd_level
        cdef int n = args.num_hidden_layers, i
        self.layers = <mcli_layer *>calloc(n, sizeof(mcli_layer))
        if self.layers == NULL:
            raise MemoryError()
        for i in range(n):
            layer = layers[i]
            self._weight(&self.layers[i].q, layer["attn_q"])
            self._weight(&self.layers[i].k, layer["attn_k"])
            self._weight(&self.layers[i].v, layer["attn_v"])
            self._weight(&self.layers[i].o, layer["attn_output"])
            self._weight(&self.layers[i].gate, layer["ffn_gate"])
            self._weight(&self.layers[i].up, layer["ffn_up"])
            self._weight(&self.layers[i].down, layer["ffn_down"])
            self.layers[i].attn_norm = self._floats(layer["attn_norm"])
            self.layers[i].ffn_norm = self._floats(layer["ffn_norm"])
            self.layers[i].q_bias = self._floats(layer["attn_q_bias"])
            self.layers[i].k_bias = self._floats(layer["attn_k_bias"])
            self.layers[i].v_bias = self._floats(layer["attn_v_bias"])
            self.layers[i].o_bias = self._floats(layer["attn_output_bias"])
            self.layers[i].q_norm = self._floats(layer.get("attn_q_norm"))
            self.layers[i].k_norm = self._floats(layer.get("attn_k_norm"))
            self.layers[i].post_attn_norm = self._floats(layer.get("post_attention_norm"))
            self.layers[i].post_ffn_norm = self._floats(layer.get("post_ffw_norm"))
            self.layers[i].window = layer.get("window") or 0
            self.layers[i].rope = layer.get("rope", 0)
            if not 0 <= self.layers[i].rope < len(inv_freqs):
                raise ValueError(f"layer {i} names rope table {self.layers[i].rope}")
        m = &self.model
        m.num_layers = n
        m.hidden = args.hidden_size
        m.num_heads = args.num_attention_heads
        m.num_kv_heads = args.num_key_value_heads
        m.head_dim = args.head_dim
        m.ffn = args.intermediate_size
        m.vocab = output.shape[0]
        m.rope_interleaved = 1 if args.rope_interleaved else 0
        m.simd_level = self.simd_level
        m.eps = args.rms_norm_eps
        m.attn_scale = attn_scale
        m.embed_scale = embed_scale
        if act not in ("silu", "gelu_tanh"):
            raise ValueError(f"no fused decode kernel for the activation {act!r}")
        m.act = 1 if act == "gelu_tanh" else 0
        m.output_norm = self._floats(output_norm)
        self._weight(&m.output, output)
        if args.hidden_size % 32:
            raise ValueError("hidden size is not a multiple of 32")
        self._weight(&m.embed, embed, products=False)  # rows looked up, not multiplied
        if not 1 <= len(inv_freqs) <= 2:
            raise ValueError("one or two rope tables")
        cdef const double[::1] inv_view
        m.inv_freq[1] = NULL
        for i, table in enumerate(inv_freqs):
            inv = np.ascontiguousarray(table, dtype=np.float64)
            if inv.shape[0] != args.head_dim // 2:
                raise ValueError("inv_freq does not match the head dim")
            self.keep.append(inv)
            inv_view = inv
            m.inv_freq[i] = &inv_view[0]
        m.layers = self.layers
        self.batch_capacity = 0
        self.scores_capacity = 0
        self._ensure(1, 1)

    cdef _ensure(self, int batch, int64_t seq):
        """Scratch for `batch` sequences and keys up to `seq` (grown, never shrunk)."""
        cdef mcli_model *m = &self.model
        cdef mcli_scratch *s = &self.scratch
        if batch > self.batch_capacity:
            widest = max(m.hidden, m.num_heads * m.head_dim, m.ffn)
            sizes = {"h": m.hidden, "x": m.hidden, "q": m.num_heads * m.head_dim, "k": m.num_kv_heads * m.head_dim,
                     "v": m.num_kv_heads * m.head_dim, "attn": m.num_heads * m.head_dim, "gate": m.ffn, "up": m.ffn,
                     "xs": widest // 32 + 1, "xm": widest // 32 + 1, "cos": m.head_dim, "sin": m.head_dim}  # 2 tables
            self.buffers = {name: np.zeros(batch * size, np.float32) for name, size in sizes.items()} | {
                "scores": self.buffers["scores"] if self.buffers else np.zeros(1, np.float32)}
            self.buffers["xq"] = np.zeros(batch * widest + 32, np.int16)
            lanes = (batch + 15) // 16 * (widest // 32)  # the lanes layout (kernels/qrows.h)
            self.buffers["xst"] = np.zeros(lanes * 16, np.float32)
            self.buffers["xmt"] = np.zeros(lanes * 16, np.float32)
            self.buffers["xt"] = np.zeros(lanes * 256, np.int32)
            s.h = self._buffer("h")
            s.x = self._buffer("x")
            s.q = self._buffer("q")
            s.k = self._buffer("k")
            s.v = self._buffer("v")
            s.attn = self._buffer("attn")
            s.gate = self._buffer("gate")
            s.up = self._buffer("up")
            s.xs = self._buffer("xs")
            s.xm = self._buffer("xm")
            s.xst = self._buffer("xst")
            s.xmt = self._buffer("xmt")
            s.cos_ = self._buffer("cos")
            s.sin_ = self._buffer("sin")
            s.xq_stride = widest
            s.scores = self._buffer("scores")
            self._set_xq()
            self.batch_capacity = batch
        if seq > self.scores_capacity:
            capacity = max(seq, 2 * self.scores_capacity)
            # attention pads its scores to a multiple of 8, and the grouped kernel takes MCLI_ATTN_GROUP rows of them
            stride = ((capacity + 7) // 8 * 8 + 8) * MCLI_ATTN_GROUP
            self.buffers["scores"] = np.zeros(max(1, self.num_threads) * stride, np.float32)
            s.scores = self._buffer("scores")
            s.scores_stride = stride
            self.scores_capacity = capacity

    cdef _set_xq(self):
        cdef int16_t[::1] xq = self.buffers["xq"]
        cdef int32_t[::1] xt = self.buffers["xt"]
        self.scratch.xq = &xq[0]
        # the lanes layout serves the AVX-512 row kernels only (kernels/qrows.h)
        self.scratch.xt = &xt[0] if self.simd_level >= 3 else NULL

    def __dealloc__(self):
        free(self.layers)

    cdef float *_buffer(self, name):
        cdef float[::1] view = self.buffers[name]
        return &view[0]

    cdef const float *_floats(self, array):
        if array is not None:
            array = np.ascontiguousarray(array, dtype=np.float32)
            self.keep.append(array)
        return _floats_of(array)

    cdef _weight(self, mcli_weight *w, tensor, bint products=True):
        cdef int qtype = int(tensor.ggml_type)
        cdef const uint8_t[::1] tile_view
        data = tensor.data
        if qtype in FLOAT_TYPES:
            data = np.ascontiguousarray(data, dtype=FLOAT_TYPES[qtype]).view(np.uint8)
        elif qtype not in SUPPORTED_TYPES:
            raise ValueError(f"{tensor.name}: no fused decode kernel for type {tensor.ggml_type.name}")
        elif tensor.shape[1] % 32:
            raise ValueError(f"{tensor.name}: rows of {tensor.shape[1]} are not whole blocks")
        self.keep.append(data)
        w.data = _bytes_of(data)
        w.qtype = qtype
        w.rows = tensor.shape[0]
        w.cols = tensor.shape[1]
        w.row_bytes = data.shape[1]
        w.dot = NULL if qtype in FLOAT_TYPES else mcli_select(qtype, self.simd_level)
        w.multi = NULL if qtype in FLOAT_TYPES else mcli_select_multi(qtype, self.simd_level)
        w.fdot = mcli_select_float(qtype, self.simd_level) if qtype in FLOAT_TYPES else NULL
        w.fmulti = mcli_select_float_multi(qtype, self.simd_level) if qtype in FLOAT_TYPES else NULL
        w.rows_fn = NULL if qtype in FLOAT_TYPES else mcli_select_rows(qtype, self.simd_level)
        w.tiles = NULL
        w.tile_fns = mcli_tile_kernels(qtype, self.simd_level)
        w.ftile_fns = mcli_ftile_kernels(qtype, self.simd_level)
        has_kernels = w.tile_fns != NULL or w.ftile_fns != NULL
        tiles = self.tiles_of(tensor) if self.tiles_of is not None and has_kernels and products else None
        if tiles is not None:
            self.keep.append(tiles)
            tile_view = tiles
            w.tiles = &tile_view[0]

    def decode(self, const int64_t[::1] tokens, const int64_t[::1] positions, const int32_t[:, ::1] block_tables,
               k_cache, v_cache, float[:, ::1] logits):
        """One token for each of B sequences: tokens, positions (B,); block_tables (B, max blocks) int32;
        k_cache, v_cache (L, NB, BS, Hkv, D) C-contiguous, both float32 or both float16 (each token's keys and
        values are written at its position; the positions before it are read); logits (B, V) are written."""
        cdef int num_seqs = tokens.shape[0], i
        cdef mcli_paged_kv kv
        if num_seqs == 0:
            return
        if positions.shape[0] != num_seqs or block_tables.shape[0] < num_seqs or logits.shape[0] < num_seqs:
            raise ValueError("tokens, positions, block tables and logits disagree on the batch size")
        if (k_cache.shape[0] != self.model.num_layers or k_cache.shape[3] != self.model.num_kv_heads
                or k_cache.shape[4] != self.model.head_dim or tuple(v_cache.shape) != tuple(k_cache.shape)
                or logits.shape[1] != self.model.vocab):
            raise ValueError("cache or logits buffer does not fit the model")
        kv.num_blocks = k_cache.shape[1]
        kv.block_size = k_cache.shape[2]
        kv.max_blocks = block_tables.shape[1]
        cdef int64_t longest = 0
        for i in range(num_seqs):
            if not 0 <= tokens[i] < self.model.embed.rows:
                raise ValueError(f"token id {tokens[i]} is outside the vocabulary")
            if positions[i] < 0 or positions[i] // kv.block_size >= kv.max_blocks:
                raise ValueError(f"position {positions[i]} is beyond the block table")
            for j in range(positions[i] // kv.block_size + 1):
                if not 0 <= block_tables[i, j] < kv.num_blocks:
                    raise ValueError(f"block {block_tables[i, j]} is not in the cache")
            longest = max(longest, positions[i] + 1)
        self._ensure(num_seqs, longest)
        cdef int v16
        kv.k = kv_data(k_cache, &kv.kv16)
        kv.v = kv_data(v_cache, &v16)
        if v16 != kv.kv16:
            raise ValueError("the key and value caches hold different types")
        kv.block_tables = &block_tables[0, 0]
        with nogil:
            mcli_llama_decode(&self.model, num_seqs, &tokens[0], &positions[0], &kv, &logits[0, 0], &self.scratch,
                              self.num_threads)

    def __call__(self, int64_t token, int64_t pos, k_cache, v_cache, float[::1] logits):
        """One token of one sequence with a contiguous cache: k_cache, v_cache (L, S, Hkv, D) float32, a
        paged cache of one block of S slots; logits (V,)."""
        if pos >= k_cache.shape[1]:
            raise ValueError("cache or logits buffer does not fit the model")
        self.decode(np.array([token], np.int64), np.array([pos], np.int64), np.zeros((1, 1), np.int32),
                    k_cache[:, None], v_cache[:, None], np.asarray(logits)[None])

