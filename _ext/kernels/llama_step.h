/* One decode step of a llama-family model for a batch of sequences in a single call: every layer,
 * then the logits, one new token per sequence.
 *
 * One OpenMP team lives for the whole step: matrix-vector products split their rows over it
 * (`omp for`) and multiply each row with every sequence's token while the row is in cache;
 * attention splits the (sequence, head) pairs; norms, rope and activation quantization split the
 * sequences. A token's arithmetic does not depend on the rest of the batch (qdot.h's products are
 * batch invariant), so a request decodes to the same bits alone or among others.
 *
 * The KV cache is paged: k_cache, v_cache (layers, num_blocks, block_size, Hkv, D) float32 or half; slot p
 * of sequence b lives in block block_tables[b * max_blocks + p / block_size], offset p % block_size.
 * A contiguous one-sequence cache is the case num_blocks = 1, block_size = capacity.
 *
 * Scratch (B the batch capacity, D head dim, H heads, Hkv key/value heads, F ffn size, W the widest
 * input of a product, S the longest sequence): h, x (B, hidden); q, attn (B, H*D); k, v (B, Hkv*D);
 * gate, up (B, F); xq (B, W) int16, xs, xm (B, W/32); cos_, sin_ (2, B, D/2); scores (threads, S).
 */
#ifndef MCLI_LLAMA_STEP_H
#define MCLI_LLAMA_STEP_H

#include "attention.h"
#include "elementwise.h"
#include "qdot.h"
#include "qrows.h"
#include "qtiles.h"
#include "ftiles.h"

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    const uint8_t *data;
    int qtype;               /* GGML type: a block format of qdot.h, or F32/F16/BF16 */
    int64_t rows, cols, row_bytes;
    mcli_dot_fn dot;         /* block formats: int16 activations */
    mcli_dot_multi_fn multi; /* block formats with a many-token kernel (else dot per token) */
    mcli_fdot_fn fdot;       /* float formats: float activations */
    mcli_fmulti_fn fmulti;   /* and many tokens a row (the same bits as fdot; NULL: fdot per token) */
    mcli_rows_fn rows_fn;    /* Q4_0/Q4_1/Q8_0 with AVX-512: qrows.h's kernels, 16 rows a call (else dot/multi) */
    const uint8_t *tiles;    /* the rows repacked for qtiles.h's kernels (NULL: none) */
    const mcli_tile_fn *tile_fns;
    const mcli_ftile_fn *ftile_fns; /* float formats with tiles: ftiles.h's kernels, for every batch size */
} mcli_weight;

/* A batch of this many sequences multiplies the repacked weights, where a weight has them. */
#ifndef MCLI_TILES_MIN
#define MCLI_TILES_MIN 2
#endif

typedef struct {
    mcli_weight q, k, v, o, gate, up, down;
    const float *attn_norm, *ffn_norm;
    const float *q_bias, *k_bias, *v_bias, *o_bias; /* NULL when absent */
    const float *q_norm, *k_norm;                   /* (D,) RMSNorm of each head of q and k before rope, or NULL */
    const float *post_attn_norm, *post_ffn_norm;    /* RMSNorm of the attention / MLP output before the residual, or NULL */
    int window;                                     /* attend to the last `window` positions only; 0: to all */
    int rope;                                       /* the model's rope table this layer uses: 0 or 1 */
} mcli_layer;

typedef struct {
    int num_layers, hidden, num_heads, num_kv_heads, head_dim, ffn, vocab, rope_interleaved;
    int simd_level;          /* of mcli_simd_level(): 2 and up takes the AVX2 attention */
    int act;                 /* the MLP: 0 silu(gate) * up, 1 gelu_tanh(gate) * up */
    float eps;
    float embed_scale;       /* embedding rows are multiplied by it (1: as they are) */
    float attn_scale;        /* of q.k */
    const float *output_norm;
    mcli_weight output;
    mcli_weight embed;       /* token_embd rows: dequantized here, one per step */
    const double *inv_freq[2]; /* (D/2,) rope inverse frequencies of tables 0 and 1 (NULL: no table 1) */
    const mcli_layer *layers;
} mcli_model;

/* Scratch: one struct of buffers sized for the model and a batch capacity (see the top). */
typedef struct {
    float *h, *x, *q, *k, *v, *attn, *gate, *up, *scores;
    float *cos_, *sin_;
    int16_t *xq;
    float *xs, *xm;
    int32_t *xt;      /* the lanes layout of xq (qrows.h): (ceil(B/16), W/32, 16, 16) */
    float *xst, *xmt; /* and of xs, xm: (ceil(B/16), W/32, 16) */
    int64_t xq_stride, scores_stride; /* xq row length W (xs, xm: W/32); scores row length S */
} mcli_scratch;

/* whether this batch's products take the tokens-in-lanes kernels (so the lanes layout is filled;
 * s->xt is only set on a CPU with AVX-512, where the row kernels run) */
static inline int mcli_use_lanes(const mcli_scratch *s, int num_seqs) { return s->xt && num_seqs >= MCLI_LANES_MIN; }

/* Quantize n values of sequence b's x into its int16 blocks of a row of `width` (blocks from block0). */
static inline void mcli_quantize_seq(const mcli_scratch *s, const float *x, int64_t n, int64_t width, int b,
                                     int64_t block0) {
    const int64_t nb = width / 32;
    mcli_quantize_x16(x, n, s->xq + (int64_t)b * width + 32 * block0, s->xs + (int64_t)b * nb + block0,
                      s->xm + (int64_t)b * nb + block0);
}

/* The batch's int16 blocks (rows of k) into the lanes layout, split over the team by block, so no
 * two threads write one cache line (as they would splitting by sequence: a line holds 16 of them). */
static void mcli_fill_lanes(const mcli_scratch *s, int64_t k, int num_seqs) {
    const int64_t nb = k / 32, groups = (num_seqs + 15) / 16;
    int64_t j;
#pragma omp for schedule(static)
    for (j = 0; j < groups * nb; j++) {
        const int64_t g = j / nb, blk = j % nb;
        for (int64_t t = 16 * g; t < num_seqs && t < 16 * g + 16; t++)
            mcli_lanes_put_blocks(s->xq + t * k + 32 * blk, s->xs + t * nb + blk, s->xm + t * nb + blk, 1,
                                  s->xt + j * 256 + t % 16, s->xst + j * 16 + t % 16, s->xmt + j * 16 + t % 16);
    }
}

typedef struct {
    void *k, *v;  /* float32, or IEEE half where kv16 */
    int kv16;
    int64_t num_blocks, block_size, max_blocks;
    const int32_t *block_tables; /* (B, max_blocks) */
} mcli_paged_kv;

/* Rows of up to 3 matrices that read the same inputs (q/k/v, gate/up) split over the team at once,
 * so they cost one barrier. x (B, K) floats, also quantized into s->xq (B, K) by the caller;
 * outs[i] (B, rows_i). */
static void mcli_matvec_n(int count, const mcli_weight *const *ws, float *const *outs, const float *const *biases,
                          const float *x, int num_seqs, const mcli_scratch *s) {
    int64_t total = 0, n, units[3] = {0, 0, 0};
    int all_tiled = 1;
    const int tiled = num_seqs >= MCLI_TILES_MIN;
    for (int i = 0; i < count; i++) { /* a unit of work: 16 rows for the tile and row kernels, else one row */
        const int tile = ws[i]->tiles && (tiled || ws[i]->ftile_fns);
        units[i] = tile || ws[i]->rows_fn ? (ws[i]->rows + 15) / 16 : ws[i]->rows;
        total += units[i];
        all_tiled &= tile;
    }
    const int lanes = !all_tiled && mcli_use_lanes(s, num_seqs);
    if (lanes) mcli_fill_lanes(s, ws[0]->cols, num_seqs);
#pragma omp for schedule(static)
    for (n = 0; n < total; n++) {
        int i = 0;
        int64_t u = n;
        while (u >= units[i]) u -= units[i++];
        const mcli_weight *w = ws[i];
        const int64_t rows = w->rows, k = w->cols, nb = k / 32;
        if (w->tiles && w->ftile_fns) { /* float weights: one token or many, the same arithmetic */
            const int64_t r0 = 16 * u, count_rows = rows - r0 < 16 ? rows - r0 : 16;
            mcli_ftiles_group(w->ftile_fns, w->tiles + u * 16 * k * mcli_ftile_elem_bytes(w->qtype), (int)count_rows, x,
                              k, num_seqs, k, outs[i] + r0, rows);
            if (biases[i])
                for (int b = 0; b < num_seqs; b++)
                    for (int64_t r = r0; r < r0 + count_rows; r++) outs[i][b * rows + r] += biases[i][r];
            continue;
        }
        if (tiled && w->tiles) {
            const int64_t r0 = 16 * u, count_rows = rows - r0 < 16 ? rows - r0 : 16;
            const mcli_tile_acts a = {s->xq, s->xs, s->xm, k, k, nb, num_seqs};
            mcli_tiles_group(w->tile_fns, w->tiles + u * nb * mcli_tile_block_bytes(w->qtype), (int)count_rows, &a,
                             outs[i] + r0, rows);
            if (biases[i])
                for (int b = 0; b < num_seqs; b++)
                    for (int64_t r = r0; r < r0 + count_rows; r++) outs[i][b * rows + r] += biases[i][r];
            continue;
        }
        if (w->rows_fn) {
            const int64_t r0 = 16 * u, count_rows = rows - r0 < 16 ? rows - r0 : 16;
            const mcli_acts a = {s->xq, s->xs, s->xm, lanes ? s->xt : NULL, s->xst, s->xmt, k, num_seqs};
            w->rows_fn(w->data + r0 * w->row_bytes, w->row_bytes, count_rows, &a, outs[i] + r0, rows);
            if (biases[i])
                for (int b = 0; b < num_seqs; b++)
                    for (int64_t r = r0; r < r0 + count_rows; r++) outs[i][b * rows + r] += biases[i][r];
            continue;
        }
        const uint8_t *row = w->data + u * w->row_bytes;
        float *out = outs[i] + u;
        if (w->multi && num_seqs > 1) { /* the same bits as the dot, faster from two tokens on */
            w->multi(row, s->xq, s->xs, s->xm, nb, num_seqs, out, rows);
        } else if (w->fmulti && num_seqs > 1) {
            w->fmulti(row, x, k, num_seqs, out, rows);
        } else {
            for (int b = 0; b < num_seqs; b++)
                out[b * rows] = w->dot ? w->dot(row, s->xq + b * k, s->xs + b * nb, s->xm + b * nb, nb)
                                       : w->fdot(row, x + b * k, k);
        }
        if (biases[i])
            for (int b = 0; b < num_seqs; b++) out[b * rows] += biases[i][u];
    }
}

static void mcli_matvec(const mcli_weight *w, const float *x, int num_seqs, const mcli_scratch *s, float *out,
                        const float *bias) {
    const mcli_weight *ws[1] = {w};
    float *outs[1] = {out};
    const float *biases[1] = {bias};
    mcli_matvec_n(1, ws, outs, biases, x, num_seqs, s);
}

/* Quantize x (B, n) into the scratch int16 blocks, rows of n (callers are inside the team). */
static void mcli_prepare(const mcli_scratch *s, const float *x, int n, int num_seqs) {
    int b;
#pragma omp for schedule(static)
    for (b = 0; b < num_seqs; b++) mcli_quantize_seq(s, x + (int64_t)b * n, n, n, b, 0);
}

/* h += x (x = rmsnorm(x) * post first, where post is given), then x = rmsnorm(h) * norm and its int16
 * blocks, per sequence (add: 0 to skip the sum) */
static void mcli_residual_norm(const mcli_scratch *s, const float *norm, int hidden, float eps, int num_seqs, int add,
                               const float *post) {
    int b;
#pragma omp for schedule(static)
    for (b = 0; b < num_seqs; b++) {
        float *h = s->h + (int64_t)b * hidden, *x = s->x + (int64_t)b * hidden;
        if (add && post) mcli_rmsnorm(x, x, post, hidden, eps);
        if (add)
            for (int i = 0; i < hidden; i++) h[i] += x[i];
        mcli_rmsnorm(x, h, norm, hidden, eps);
        mcli_quantize_seq(s, x, hidden, hidden, b, 0);
    }
}

/* the K/V slot (an element index) of sequence b's position p in layer l */
static inline int64_t mcli_slot(const mcli_paged_kv *kv, int l, int b, int64_t p, int kv_dim) {
    const int64_t block = kv->block_tables[(int64_t)b * kv->max_blocks + p / kv->block_size];
    return (((int64_t)l * kv->num_blocks + block) * kv->block_size + p % kv->block_size) * kv_dim;
}

/* a token's keys and values (n floats each) into the cache at slot, as stored there (float32, or half
 * rounded as numpy's astype rounds the slots of prompt chunks: mcli_to_fp16_row) */
static void mcli_kv_store(const mcli_paged_kv *kv, int64_t slot, const float *k, const float *v, int n, int level) {
    if (kv->kv16) {
        mcli_to_fp16_row((uint16_t *)kv->k + slot, k, n, level);
        mcli_to_fp16_row((uint16_t *)kv->v + slot, v, n, level);
    } else {
        memcpy((float *)kv->k + slot, k, sizeof(float) * n);
        memcpy((float *)kv->v + slot, v, sizeof(float) * n);
    }
}

static void mcli_llama_decode(const mcli_model *m, int num_seqs, const int64_t *tokens, const int64_t *positions,
                              const mcli_paged_kv *kv, float *logits, const mcli_scratch *s, int num_threads) {
    const int hidden = m->hidden, d = m->head_dim, nh = m->num_heads, nkv = m->num_kv_heads;
    const int group = nh / nkv, q_dim = nh * d, kv_dim = nkv * d, half = d / 2;
    const float scale = m->attn_scale;
    for (int b = 0; b < num_seqs; b++) {
        const uint8_t *embed_row = m->embed.data + tokens[b] * m->embed.row_bytes;
        float *h = s->h + (int64_t)b * hidden;
        if (m->embed.qtype == MCLI_F32) {
            memcpy(h, embed_row, sizeof(float) * hidden);
        } else if (m->embed.qtype == MCLI_F16 || m->embed.qtype == MCLI_BF16) {
            for (int i = 0; i < hidden; i++)
                h[i] = m->embed.qtype == MCLI_F16 ? mcli_fp16(embed_row + 2 * i) : mcli_bf16(embed_row + 2 * i);
        } else {
            mcli_dequant_row(m->embed.qtype, embed_row, h, hidden);
        }
        if (m->embed_scale != 1.0f)
            for (int i = 0; i < hidden; i++) h[i] *= m->embed_scale;
        for (int r = 0; r < 2 && m->inv_freq[r]; r++) /* angles in double, as the Python side computes them */
            for (int i = 0; i < half; i++) {
                const int64_t at = ((int64_t)r * num_seqs + b) * half + i;
                s->cos_[at] = (float)cos((double)positions[b] * m->inv_freq[r][i]);
                s->sin_[at] = (float)sin((double)positions[b] * m->inv_freq[r][i]);
            }
    }
#pragma omp parallel num_threads(num_threads)
    {
#ifdef _OPENMP
        float *scores = s->scores + (int64_t)omp_get_thread_num() * s->scores_stride;
#else
        float *scores = s->scores;
#endif
        mcli_residual_norm(s, m->layers[0].attn_norm, hidden, m->eps, num_seqs, 0, NULL);
        for (int l = 0; l < m->num_layers; l++) {
            const mcli_layer *L = &m->layers[l];
            {
                const mcli_weight *ws[3] = {&L->q, &L->k, &L->v};
                float *outs[3] = {s->q, s->k, s->v};
                const float *biases[3] = {L->q_bias, L->k_bias, L->v_bias};
                mcli_matvec_n(3, ws, outs, biases, s->x, num_seqs, s);
            }
            int b;
#pragma omp for schedule(static)
            for (b = 0; b < num_seqs; b++) {
                float *q = s->q + (int64_t)b * q_dim, *k = s->k + (int64_t)b * kv_dim, *v = s->v + (int64_t)b * kv_dim;
                if (L->q_norm)
                    for (int hh = 0; hh < nh; hh++) mcli_rmsnorm(q + hh * d, q + hh * d, L->q_norm, d, m->eps);
                if (L->k_norm)
                    for (int hh = 0; hh < nkv; hh++) mcli_rmsnorm(k + hh * d, k + hh * d, L->k_norm, d, m->eps);
                const int64_t angles = ((int64_t)L->rope * num_seqs + b) * half;
                mcli_rope(q, nh, d, s->cos_ + angles, s->sin_ + angles, m->rope_interleaved);
                mcli_rope(k, nkv, d, s->cos_ + angles, s->sin_ + angles, m->rope_interleaved);
                const int64_t slot = mcli_slot(kv, l, b, positions[b], kv_dim);
                mcli_kv_store(kv, slot, k, v, kv_dim, m->simd_level);
            }
            /* a job: a sequence's query heads that share a key/value head, read once for them all, where
             * there are enough such jobs for the team; else one head (the same bits either way) */
            const int heads_per_job = num_seqs * nkv >= 4 * num_threads ? group : 1, jobs_per_seq = nh / heads_per_job;
            int job;
#pragma omp for schedule(static)
            for (job = 0; job < num_seqs * jobs_per_seq; job++) {
                const int bb = job / jobs_per_seq, h = job % jobs_per_seq * heads_per_job, kvh = h / group;
                const int64_t seq = positions[bb] + 1, first = L->window && seq > L->window ? seq - L->window : 0;
                const float *qh = s->q + (int64_t)bb * q_dim + h * d;
                float *out = s->attn + (int64_t)bb * q_dim + h * d;
                const int32_t *table = kv->block_tables + (int64_t)bb * kv->max_blocks;
                const int64_t layer_base = (int64_t)l * kv->num_blocks * kv->block_size * kv_dim + kvh * d;
                const int64_t es = kv->kv16 ? 2 : 4;
                mcli_attend_paged_heads(qh, heads_per_job, (const char *)kv->k + layer_base * es,
                                        (const char *)kv->v + layer_base * es, table, kv->block_size, first, seq, kv_dim, d,
                                        scale, scores, out, m->simd_level, kv->kv16);
                if (d % 32 == 0) /* these heads' blocks of the o-projection input, here: no serial pass */
                    for (int hh = h; hh < h + heads_per_job; hh++)
                        mcli_quantize_seq(s, s->attn + (int64_t)bb * q_dim + hh * d, d, q_dim, bb, hh * d / 32);
            }
            if (d % 32) mcli_prepare(s, s->attn, q_dim, num_seqs);
            mcli_matvec(&L->o, s->attn, num_seqs, s, s->x, L->o_bias);
            mcli_residual_norm(s, L->ffn_norm, hidden, m->eps, num_seqs, 1, L->post_attn_norm);
            {
                const mcli_weight *ws[2] = {&L->gate, &L->up};
                float *outs[2] = {s->gate, s->up};
                const float *biases[2] = {NULL, NULL};
                mcli_matvec_n(2, ws, outs, biases, s->x, num_seqs, s);
            }
#pragma omp for schedule(static)
            for (b = 0; b < num_seqs; b++) {
                float *gate = s->gate + (int64_t)b * m->ffn;
                if (m->act == 1)
                    mcli_geglu_tanh(gate, gate, s->up + (int64_t)b * m->ffn, m->ffn);
                else
                    mcli_swiglu(gate, gate, s->up + (int64_t)b * m->ffn, m->ffn);
                mcli_quantize_seq(s, gate, m->ffn, m->ffn, b, 0);
            }
            mcli_matvec(&L->down, s->gate, num_seqs, s, s->x, NULL);
            /* the residual, then the next layer's (or the output's) norm */
            mcli_residual_norm(s, l + 1 < m->num_layers ? m->layers[l + 1].attn_norm : m->output_norm, hidden, m->eps,
                               num_seqs, 1, L->post_ffn_norm);
        }
        mcli_matvec(&m->output, s->x, num_seqs, s, logits, NULL);
    }
}

#endif
