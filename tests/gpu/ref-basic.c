/* SPDX-License-Identifier: MIT */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "ref-basic.h"

void ref_rmsnorm(const float *x, const float *weight, float *out, uint32_t n_rows, uint32_t n_cols, float eps) {
        for (uint32_t r = 0; r < n_rows; r++) {
                const float *xr = x + (size_t) r * n_cols;
                float *or = out + (size_t) r * n_cols;
                double ss = 0;
                for (uint32_t i = 0; i < n_cols; i++)
                        ss += (double) xr[i] * xr[i];
                double scale = 1.0 / sqrt(ss / n_cols + eps);
                for (uint32_t i = 0; i < n_cols; i++)
                        or[i] = (float) (xr[i] * scale * (weight ? weight[i] : 1.0f));
        }
}

/* theta_scale^e by repeated squaring in float: the very multiplications rope.comp does. */
static float powi_f(float b, uint32_t e) {
        volatile float r = 1.0f, s = b; /* volatile: no contraction or excess precision */
        while (e) {
                if (e & 1)
                        r = r * s;
                s = s * s;
                e >>= 1;
        }
        return r;
}

void ref_rope(const float *x, const int32_t *pos, const float *factors_inv, float *out, const GpuRope *p) {
        uint32_t row = p->n_heads * p->head_dim;
        uint32_t xs = p->x_stride ? p->x_stride : row, os = p->out_stride ? p->out_stride : row;
        uint32_t half_rot = p->n_rot / 2;
        float theta_scale = p->n_rot ? (float) pow(p->freq_base, -2.0 / p->n_rot) : 1.0f;

        for (uint32_t t = 0; t < p->n_tokens; t++) {
                volatile float fpos = (float) pos[t] * p->freq_scale;
                for (uint32_t h = 0; h < p->n_heads; h++) {
                        const float *xh = x + (size_t) t * xs + (size_t) h * p->head_dim;
                        float *oh = out + (size_t) t * os + (size_t) h * p->head_dim;
                        /* Pass-through first: out may be x, and these are not read again. */
                        for (uint32_t i = p->n_rot; i < p->head_dim; i++)
                                oh[i] = xh[i];
                        for (uint32_t j = 0; j < half_rot; j++) {
                                uint32_t i0 = p->mode == GPU_ROPE_NEOX ? j : 2 * j;
                                uint32_t i1 = p->mode == GPU_ROPE_NEOX ? j + half_rot : 2 * j + 1;
                                volatile float theta = fpos * powi_f(theta_scale, j);
                                if (factors_inv)
                                        theta = theta * factors_inv[j];
                                /* The float theta, then sin/cos without further rounding. */
                                double c = cos((double) theta), s = sin((double) theta);
                                double x0 = xh[i0], x1 = xh[i1];
                                oh[i0] = (float) (x0 * c - x1 * s);
                                oh[i1] = (float) (x0 * s + x1 * c);
                        }
                }
        }
}

void ref_softmax(const float *x, float *out, uint32_t n_rows, uint32_t n_cols, float scale) {
        for (uint32_t r = 0; r < n_rows; r++) {
                const float *xr = x + (size_t) r * n_cols;
                float *or = out + (size_t) r * n_cols;
                double m = -INFINITY, s = 0;
                for (uint32_t i = 0; i < n_cols; i++)
                        m = fmax(m, (double) scale * xr[i]);
                for (uint32_t i = 0; i < n_cols; i++)
                        s += exp((double) scale * xr[i] - m);
                for (uint32_t i = 0; i < n_cols; i++)
                        or[i] = (float) (exp((double) scale * xr[i] - m) / s);
        }
}

void ref_swiglu(const float *gate, const float *up, float *out, size_t n) {
        for (size_t i = 0; i < n; i++) {
                double g = gate[i];
                out[i] = (float) (g / (1.0 + exp(-g)) * up[i]);
        }
}

void ref_binary(const float *a, const float *b, float *out, uint32_t n_rows, uint32_t n_cols, bool b_broadcast,
                bool mul) {
        for (uint32_t r = 0; r < n_rows; r++)
                for (uint32_t i = 0; i < n_cols; i++) {
                        size_t k = (size_t) r * n_cols + i;
                        float vb = b[b_broadcast ? i : k];
                        out[k] = mul ? a[k] * vb : a[k] + vb;
                }
}

void ref_argmax(const float *x, uint32_t *out, uint32_t n_rows, uint32_t n_cols) {
        for (uint32_t r = 0; r < n_rows; r++) {
                const float *xr = x + (size_t) r * n_cols;
                uint32_t best = 0;
                for (uint32_t i = 1; i < n_cols; i++)
                        if (fminf(xr[i], FLT_MAX) > fminf(xr[best], FLT_MAX))   /* +inf as FLT_MAX */
                                best = i;
                out[r] = best;
        }
}

typedef struct RefCand {
        float v;
        uint32_t i;
} RefCand;

static int ref_cand_cmp(const void *pa, const void *pb) {
        const RefCand *a = pa, *b = pb;
        if (a->v != b->v)
                return a->v > b->v ? -1 : 1;
        return a->i < b->i ? -1 : a->i > b->i;
}

uint32_t ref_topk_order(const float *x, uint32_t n_cols, uint32_t *order) {
        RefCand *c = malloc((n_cols + 1) * sizeof *c);
        uint32_t n = 0;

        if (!c)
                abort();
        for (uint32_t i = 0; i < n_cols; i++) {
                if (isnan(x[i]) || x[i] == -INFINITY)
                        continue;
                c[n++] = (RefCand) { .v = x[i] == INFINITY ? FLT_MAX : x[i], .i = i };
        }
        /* The index breaks every tie: the same result as a stable sort by value. */
        qsort(c, n, sizeof *c, ref_cand_cmp);
        for (uint32_t j = 0; j < n; j++)
                order[j] = c[j].i;
        free(c);
        return n;
}
