/* One decode step of a llama-family model in a single call: every layer, then the logits.
 *
 * One OpenMP team lives for the whole step: matrix-vector products split their rows over it
 * (`omp for`), attention splits its heads, and the small serial parts (norms, rope, activation
 * quantization) run in `omp single`. Weights are raw GGML blocks (see qdot.h) or float32 rows.
 *
 * Buffers (D head dim, H heads, Hkv key/value heads, F ffn size, S cache capacity):
 *   k_cache, v_cache (layers, S, Hkv, D) float32; cos, sin (D/2,); logits (V,)
 */
#ifndef MCLI_LLAMA_STEP_H
#define MCLI_LLAMA_STEP_H

#include "elementwise.h"
#include "qdot.h"

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    const uint8_t *data;
    int qtype;         /* GGML type: a block format of qdot.h, or F32/F16/BF16 */
    int64_t rows, cols, row_bytes;
    mcli_dot_fn dot;   /* block formats: int16 activations */
    mcli_fdot_fn fdot; /* float formats: float activations */
} mcli_weight;

typedef struct {
    mcli_weight q, k, v, o, gate, up, down;
    const float *attn_norm, *ffn_norm;
    const float *q_bias, *k_bias, *v_bias, *o_bias; /* NULL when absent */
} mcli_layer;

typedef struct {
    int num_layers, hidden, num_heads, num_kv_heads, head_dim, ffn, vocab, rope_interleaved;
    float eps;
    const float *output_norm;
    mcli_weight output;
    mcli_weight embed;       /* token_embd rows: dequantized here, one per step */
    const double *inv_freq;  /* (D/2,) rope inverse frequencies */
    const mcli_layer *layers;
} mcli_model;

/* Scratch: one struct of buffers sized for the model (allocated by the caller). */
typedef struct {
    float *h, *x, *q, *k, *v, *attn, *gate, *up, *scores; /* scores: (H, S) */
    float *cos_, *sin_;                                     /* (D/2,) */
    int16_t *xq;
    float *xs, *xm;
} mcli_scratch;

/* Rows of up to 3 matrices that read the same x (q/k/v, gate/up) split over the team at once,
 * so they cost one barrier. x is given as floats and as int16 blocks (prepared by the caller). */
static void mcli_matvec_n(int count, const mcli_weight *const *ws, float *const *outs, const float *const *biases,
                          const float *x, const mcli_scratch *s) {
    int64_t total = 0, n;
    for (int i = 0; i < count; i++) total += ws[i]->rows;
#pragma omp for schedule(static)
    for (n = 0; n < total; n++) {
        int i = 0;
        int64_t r = n;
        while (r >= ws[i]->rows) r -= ws[i++]->rows;
        const mcli_weight *w = ws[i];
        const uint8_t *row = w->data + r * w->row_bytes;
        float y = w->dot ? w->dot(row, s->xq, s->xs, s->xm, w->cols / 32) : w->fdot(row, x, w->cols);
        outs[i][r] = biases[i] ? y + biases[i][r] : y;
    }
}

static void mcli_matvec(const mcli_weight *w, const float *x, const mcli_scratch *s, float *out, const float *bias) {
    const mcli_weight *ws[1] = {w};
    float *outs[1] = {out};
    const float *biases[1] = {bias};
    mcli_matvec_n(1, ws, outs, biases, x, s);
}

/* Quantize x (n,) into the scratch int16 blocks (serial; callers wrap it in omp single). */
static void mcli_prepare(const mcli_scratch *s, const float *x, int n) { mcli_quantize_x16(x, n, s->xq, s->xs, s->xm); }

static void mcli_llama_step(const mcli_model *m, int64_t token, int64_t pos, float *k_cache, float *v_cache,
                            int64_t capacity, float *logits, const mcli_scratch *s, int num_threads) {
    const int hidden = m->hidden, d = m->head_dim, nh = m->num_heads, nkv = m->num_kv_heads;
    const int group = nh / nkv, q_dim = nh * d, kv_dim = nkv * d;
    const int64_t seq = pos + 1;
    const float scale = 1.0f / sqrtf((float)d);
    const uint8_t *embed_row = m->embed.data + token * m->embed.row_bytes;
    if (m->embed.qtype == MCLI_F32) {
        memcpy(s->h, embed_row, sizeof(float) * hidden);
    } else if (m->embed.qtype == MCLI_F16 || m->embed.qtype == MCLI_BF16) {
        for (int i = 0; i < hidden; i++)
            s->h[i] = m->embed.qtype == MCLI_F16 ? mcli_fp16(embed_row + 2 * i) : mcli_bf16(embed_row + 2 * i);
    } else {
        mcli_dequant_row(m->embed.qtype, embed_row, s->h, hidden);
    }
    float *cos_ = s->cos_, *sin_ = s->sin_;
    for (int i = 0; i < d / 2; i++) { /* angles in double, as the Python side computes them */
        cos_[i] = (float)cos((double)pos * m->inv_freq[i]);
        sin_[i] = (float)sin((double)pos * m->inv_freq[i]);
    }
#pragma omp parallel num_threads(num_threads)
    {
#pragma omp single
        {
            mcli_rmsnorm(s->x, s->h, m->layers[0].attn_norm, hidden, m->eps);
            mcli_prepare(s, s->x, hidden);
        }
        for (int l = 0; l < m->num_layers; l++) {
            const mcli_layer *L = &m->layers[l];
            float *kc = k_cache + (int64_t)l * capacity * kv_dim, *vc = v_cache + (int64_t)l * capacity * kv_dim;
            {
                const mcli_weight *ws[3] = {&L->q, &L->k, &L->v};
                float *outs[3] = {s->q, s->k, s->v};
                const float *biases[3] = {L->q_bias, L->k_bias, L->v_bias};
                mcli_matvec_n(3, ws, outs, biases, s->x, s);
            }
#pragma omp single
            {
                mcli_rope(s->q, nh, d, cos_, sin_, m->rope_interleaved);
                mcli_rope(s->k, nkv, d, cos_, sin_, m->rope_interleaved);
                memcpy(kc + pos * kv_dim, s->k, sizeof(float) * kv_dim);
                memcpy(vc + pos * kv_dim, s->v, sizeof(float) * kv_dim);
            }
            int h;
#pragma omp for schedule(static)
            for (h = 0; h < nh; h++) {
                const float *qh = s->q + h * d;
                float *sc = s->scores + (int64_t)h * capacity, *out = s->attn + h * d;
                const int kvh = h / group;
                float best = -INFINITY, total = 0.0f;
                for (int64_t t = 0; t < seq; t++) {
                    const float *kt = kc + t * kv_dim + kvh * d;
                    float dot = 0.0f;
                    for (int i = 0; i < d; i++) dot += qh[i] * kt[i];
                    sc[t] = dot * scale;
                    best = sc[t] > best ? sc[t] : best;
                }
                for (int64_t t = 0; t < seq; t++) {
                    sc[t] = expf(sc[t] - best);
                    total += sc[t];
                }
                for (int i = 0; i < d; i++) out[i] = 0.0f;
                for (int64_t t = 0; t < seq; t++) {
                    const float *vt = vc + t * kv_dim + kvh * d;
                    const float p = sc[t] / total;
                    for (int i = 0; i < d; i++) out[i] += p * vt[i];
                }
                if (d % 32 == 0) /* this head's blocks of the o-projection input, here: no serial pass */
                    mcli_quantize_x16(out, d, s->xq + h * d, s->xs + h * d / 32, s->xm + h * d / 32);
            }
            if (d % 32) {
#pragma omp single
                mcli_prepare(s, s->attn, q_dim);
            }
            mcli_matvec(&L->o, s->attn, s, s->x, L->o_bias);
#pragma omp single
            {
                for (int i = 0; i < hidden; i++) s->h[i] += s->x[i];
                mcli_rmsnorm(s->x, s->h, L->ffn_norm, hidden, m->eps);
                mcli_prepare(s, s->x, hidden);
            }
            {
                const mcli_weight *ws[2] = {&L->gate, &L->up};
                float *outs[2] = {s->gate, s->up};
                const float *biases[2] = {NULL, NULL};
                mcli_matvec_n(2, ws, outs, biases, s->x, s);
            }
#pragma omp single
            {
                mcli_swiglu(s->gate, s->gate, s->up, m->ffn);
                mcli_prepare(s, s->gate, m->ffn);
            }
            mcli_matvec(&L->down, s->gate, s, s->x, NULL);
#pragma omp single
            { /* the residual, then the next layer's (or the output's) norm in the same serial stretch */
                for (int i = 0; i < hidden; i++) s->h[i] += s->x[i];
                const float *norm = l + 1 < m->num_layers ? m->layers[l + 1].attn_norm : m->output_norm;
                mcli_rmsnorm(s->x, s->h, norm, hidden, m->eps);
                mcli_prepare(s, s->x, hidden);
            }
        }
        mcli_matvec(&m->output, s->x, s, logits, NULL);
    }
}

#endif
