/* The profile reduction on the CPU in one pass over each captured value (neurondb.profile.native).
 *
 * For the neurons [j0, j1) of G layers of width d, over n captured rows (tokens):
 *   sum, sumsq   float64 [G, d]          += h, h*h (h as float32, summed in float64, row order)
 *   mn, mx       float32 [G, d]          running min / max (a NaN sticks, as torch.minimum)
 *   npos         int64   [G, d]          += count(h > 0)
 *   hist         int64   [G, d, N+2]     += one count per value in bin
 *                                         clamp(floor(h * inv_w[g]) - m[g], 0, N+1), NaN -> N+1
 *   label_sum    float64 [G, L, d]       += h for the row's label (label < 0: none)
 *   top, bottom  int64   [G, d, K]       the K largest keys seen (best first; EMPTY = INT64_MIN)
 * Keys are those of neurondb/profile/keys.py: the float32 bits of h + 0.0f mapped to an int32 that
 * sorts like the float, times 2**32, plus 2**32 - 1 - tok (bottom: the complement of the ordered
 * value), so keys are unique per token and the top-K is exact, ties broken by token.
 *
 * Every neuron is reduced in row order by one thread, so the result does not depend on how the
 * neurons are split between calls (the caller runs calls on disjoint ranges in parallel).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define TILE 32 /* neurons per tile: 32 x (N+2) int32 counts stay in L1 */
#define LOW 4294967296LL /* 2**32 */

static inline int64_t ordered_of(float v) { /* v: already +0.0 for a zero */
    int32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (int64_t)(bits ^ ((bits >> 31) & 0x7FFFFFFF));
}

/* floor division by 2**32 (arithmetic shift: gcc and clang shift signed values arithmetically) */
static inline int64_t hi_of(int64_t key) { return key >> 32; }

/* a min-heap of K keys: replace the root by key and sift it down */
static inline void heap_replace(int64_t *h, int32_t K, int64_t key) {
    int32_t i = 0;
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, s = i;
        int64_t best = key;
        if (l < K && h[l] < best) { s = l; best = h[l]; }
        if (r < K && h[r] < best) { s = r; }
        if (s == i) break;
        h[i] = h[s];
        i = s;
    }
    h[i] = key;
}

static inline void sift_down(int64_t *h, int32_t n, int32_t i) {
    int64_t key = h[i];
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, s = i;
        int64_t best = key;
        if (l < n && h[l] < best) { s = l; best = h[l]; }
        if (r < n && h[r] < best) { s = r; }
        if (s == i) break;
        h[i] = h[s];
        i = s;
    }
    h[i] = key;
}

/* best-first [K] -> ascending (a valid min-heap) */
static void load_heap(int64_t *heap, const int64_t *best_first, int32_t K) {
    for (int32_t i = 0; i < K; i++) heap[i] = best_first[K - 1 - i];
}

/* min-heap -> best first: heapsort pops the minimum to the end each time */
static void store_heap(int64_t *best_first, int64_t *heap, int32_t K) {
    for (int32_t end = K - 1; end > 0; end--) {
        int64_t t = heap[0];
        heap[0] = heap[end];
        heap[end] = t;
        sift_down(heap, end, 0);
    }
    memcpy(best_first, heap, (size_t)K * sizeof(int64_t));
}

/* One row of one tile: the vectorisable statistics first (sums, extremes, signs, bins, whether
 * a value can enter a heap), then the scalar part (histogram counts, the rare heap updates).
 * tw is a constant TILE for full tiles (the compiler unrolls and vectorises), smaller at the
 * end of a range. */
static inline void row_update(const float *restrict row, const int64_t tw, const int64_t low,
                              double *restrict ls, double *restrict s, double *restrict sq,
                              float *restrict lo, float *restrict hi, int32_t *restrict np,
                              int32_t *restrict hcount, const int64_t B, const float iw,
                              const float mg, const float overflow,
                              int32_t *restrict thr_top, int32_t *restrict thr_bot,
                              int64_t *const *ht, int64_t *const *hb, const int32_t K) {
    int32_t bin[TILE], ord[TILE];
    uint32_t any = 0; /* bit t: value t may enter a heap */
    for (int64_t t = 0; t < tw; t++) {
        const float v = row[t] + 0.0f; /* -0.0 -> +0.0, as the torch path */
        const double vd = (double)v;
        s[t] += vd;
        sq[t] += vd * vd;
        /* a NaN, once seen, sticks (torch.minimum / amin propagate it) */
        const float l = (v >= lo[t]) ? lo[t] : v, h = (v <= hi[t]) ? hi[t] : v;
        lo[t] = (lo[t] != lo[t]) ? lo[t] : l;
        hi[t] = (hi[t] != hi[t]) ? hi[t] : h;
        np[t] += (v > 0.0f);
        float b = floorf(v * iw) - mg;
        b = (b > overflow) ? overflow : b;
        b = (b >= 0.0f) ? b : ((b != b) ? overflow : 0.0f);
        bin[t] = (int32_t)b;
        int32_t bits;
        memcpy(&bits, &v, sizeof bits);
        const int32_t o = bits ^ ((bits >> 31) & 0x7FFFFFFF);
        ord[t] = o;
        any |= (uint32_t)((o >= thr_top[t]) | (~o >= thr_bot[t])) << t;
    }
    if (ls) {
        for (int64_t t = 0; t < tw; t++) ls[t] += (double)(row[t] + 0.0f);
    }
    for (int64_t t = 0; t < tw; t++) hcount[t * B + bin[t]] += 1;
    while (any) {
        const int t = __builtin_ctz(any);
        any &= any - 1;
        const int64_t o = ord[t];
        if (o >= thr_top[t]) {
            const int64_t key = o * LOW + low;
            if (key > ht[t][0]) {
                heap_replace(ht[t], K, key);
                thr_top[t] = (int32_t)hi_of(ht[t][0]);
            }
        }
        const int64_t bo = -o - 1;
        if (bo >= thr_bot[t]) {
            const int64_t key = bo * LOW + low;
            if (key > hb[t][0]) {
                heap_replace(hb[t], K, key);
                thr_bot[t] = (int32_t)hi_of(hb[t][0]);
            }
        }
    }
}

int nd_profile_update(int64_t G, int64_t n, int64_t d, int64_t j0, int64_t j1,
                      const float *const *x, const int64_t *tok, const int32_t *label, int32_t L,
                      double *sum, double *sumsq, float *mn, float *mx, int64_t *npos,
                      int64_t *hist, int32_t nbins, const float *inv_w, const float *m,
                      double *label_sum, int64_t *top, int64_t *bottom, int32_t K,
                      int64_t *heap_buf /* [TILE, 2, K] */, int32_t *hist_buf /* [TILE, N+2] */) {
    const int64_t B = nbins + 2;
    const float overflow = (float)(nbins + 1);
    for (int64_t g = 0; g < G; g++) {
        const float *xg = x[g];
        const float iw = inv_w[g], mg = m[g];
        for (int64_t jt = j0; jt < j1; jt += TILE) {
            const int64_t tw = (j1 - jt < TILE) ? (j1 - jt) : TILE;
            double s[TILE], sq[TILE];
            float lo[TILE], hi[TILE];
            int32_t np[TILE], thr_top[TILE], thr_bot[TILE];
            int64_t *ht[TILE], *hb[TILE];
            memset(hist_buf, 0, (size_t)(TILE * B) * sizeof(int32_t));
            for (int64_t t = 0; t < tw; t++) {
                const int64_t j = g * d + jt + t;
                s[t] = 0.0; sq[t] = 0.0; np[t] = 0;
                lo[t] = mn[j]; hi[t] = mx[j];
                ht[t] = heap_buf + (t * 2) * K;
                hb[t] = heap_buf + (t * 2 + 1) * K;
                load_heap(ht[t], top + j * K, K);
                load_heap(hb[t], bottom + j * K, K);
                thr_top[t] = (int32_t)hi_of(ht[t][0]);
                thr_bot[t] = (int32_t)hi_of(hb[t][0]);
            }
            for (int64_t i = 0; i < n; i++) {
                const float *row = xg + i * d + jt;
                const int32_t lab = label[i];
                double *ls = (lab >= 0 && lab < L) ? label_sum + (g * L + lab) * d + jt : 0;
                const int64_t low = LOW - 1 - tok[i];
                if (tw == TILE)
                    row_update(row, TILE, low, ls, s, sq, lo, hi, np, hist_buf, B, iw, mg,
                               overflow, thr_top, thr_bot, ht, hb, K);
                else
                    row_update(row, tw, low, ls, s, sq, lo, hi, np, hist_buf, B, iw, mg,
                               overflow, thr_top, thr_bot, ht, hb, K);
            }
            int64_t *hrow = hist + (g * d + jt) * B;
            for (int64_t t = 0; t < tw; t++) {
                const int64_t j = g * d + jt + t;
                sum[j] += s[t];
                sumsq[j] += sq[t];
                mn[j] = lo[t];
                mx[j] = hi[t];
                npos[j] += np[t];
                for (int64_t b = 0; b < B; b++) hrow[t * B + b] += hist_buf[t * B + b];
                store_heap(top + j * K, ht[t], K);
                store_heap(bottom + j * K, hb[t], K);
            }
        }
    }
    return 0;
}

int nd_tile(void) { return TILE; }
