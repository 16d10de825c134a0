/* The profile reduction on the CPU in one pass over each captured value (neurondb.profile.native).
 *
 * For the neurons [j0, j1) of G layers of width d, over n captured rows (tokens): row i of
 * layer g is x[g] + (rows ? rows[i] : i) * d (rows: the captured rows of a whole [B*T, d]
 * activation, so that nothing is copied out of the model's tensor first):
 *   sum, sumsq   float64 [G, d]          += h, h*h (h as float32, summed in float64, row order)
 *   mn, mx       float32 [G, d]          running min / max (a NaN sticks, as torch.minimum)
 *   npos         int64   [G, d]          += count(h > 0)
 *   hist         int64   [G, d, N+2]     += one count per value in bin
 *                                         clamp(floor(h * inv_w[g]) - m[g], 0, N+1), NaN -> N+1
 *   label_sum    float64 [G, L, d]       += h for the row's label (label < 0: none)
 *   top, bottom  int64   [G, d, K]       the K largest keys seen, as a min-heap per neuron
 *                                         (EMPTY = INT64_MIN; the caller sorts them at the end)
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

#define TILE 16 /* neurons per tile: one vector of floats; 16 x (N+2) int32 counts in L1 */
#define LOW 4294967296LL /* 2**32 */
#define PREFETCH 32 /* rows ahead */

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

/* Sixteen neurons are one vector (GCC/clang vector extensions: one AVX-512 register, or two
 * AVX2 or four SSE registers): their sums, extremes and sign counts stay in registers over all
 * the rows of a call, and each row of the tile is one 64-byte load. */
typedef float vf __attribute__((vector_size(64)));
typedef double vd __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));

static inline vi select_i(vi m, vi a, vi b) { return (a & m) | (b & ~m); }
static inline vf select_f(vi m, vf a, vf b) { return (vf)select_i(m, (vi)a, (vi)b); }

/* the 64 bytes of one tile row; past the range's end (tw < TILE) the lanes read 0 */
static inline vf load_row(const float *row, int64_t tw) {
    vf v;
    if (tw == TILE) {
        memcpy(&v, row, sizeof v);
    } else {
        float tmp[TILE] = {0};
        memcpy(tmp, row, (size_t)tw * sizeof(float));
        memcpy(&v, tmp, sizeof v);
    }
    return v;
}

/* The rare path, out of line so that the hot loop keeps its vectors in registers: offer the
 * row's values (ordered ints oa, token part low) to the heaps of the lanes below tw. */
__attribute__((noinline, cold)) static void heap_candidates(
        const int32_t *oa, const int32_t *ca, int64_t low, int32_t *tt, int32_t *tb,
        int64_t *const *ht, int64_t *const *hb, int32_t K) {
    uint32_t lanes = 0; /* the lanes whose value may enter a heap (padding lanes never do) */
    for (int t = 0; t < TILE; t++) lanes |= (uint32_t)(ca[t] & 1) << t;
    while (lanes) {
        const int t = __builtin_ctz(lanes);
        lanes &= lanes - 1;
        const int64_t ot = oa[t];
        if (ot >= tt[t]) {
            const int64_t key = ot * LOW + low;
            if (key > ht[t][0]) {
                heap_replace(ht[t], K, key);
                tt[t] = (int32_t)hi_of(ht[t][0]);
            }
        }
        const int64_t bo = -ot - 1;
        if (bo >= tb[t]) {
            const int64_t key = bo * LOW + low;
            if (key > hb[t][0]) {
                heap_replace(hb[t], K, key);
                tb[t] = (int32_t)hi_of(hb[t][0]);
            }
        }
    }
}

/* label sums of a tile narrower than TILE (the end of a range) */
__attribute__((noinline)) static void label_tail(double *ls, vd d0, vd d1, int64_t tw) {
    double a[TILE];
    memcpy(a, &d0, sizeof d0);
    memcpy(a + 8, &d1, sizeof d1);
    for (int64_t t = 0; t < tw; t++) ls[t] += a[t];
}

/* the neurons [jt, jt + tw) of one layer over the n rows (see the file comment) */
static void tile_update(const float *xg, const int64_t *rows, const int64_t *tok,
                        const int32_t *label, int32_t L, int64_t n, int64_t d, int64_t jt,
                        int64_t tw, int64_t j, double *sum, double *sumsq, float *mn, float *mx,
                        int64_t *npos, int64_t *hist, int64_t B, float iw, float mg,
                        double *label_sum, int64_t g, int64_t *top, int64_t *bottom, int32_t K,
                        int32_t *hcount) {
    const float overflow = (float)(B - 1);
    vd s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0};
    vf lo, hi;
    vi np = {0}, thr_t, thr_b;
    int32_t tt[TILE], tb[TILE];
    int64_t *ht[TILE], *hb[TILE];
    float lo_a[TILE], hi_a[TILE];
    for (int64_t t = 0; t < TILE; t++) {
        const int64_t k = t < tw ? t : 0; /* padding lanes mirror lane 0, never stored */
        lo_a[t] = mn[j + k];
        hi_a[t] = mx[j + k];
        ht[t] = top + (j + k) * K; /* the state's own min-heaps, updated in place */
        hb[t] = bottom + (j + k) * K;
        if (t < tw) {
            tt[t] = (int32_t)hi_of(ht[t][0]);
            tb[t] = (int32_t)hi_of(hb[t][0]);
        } else {
            tt[t] = INT32_MAX; /* a padding lane never enters a heap */
            tb[t] = INT32_MAX;
        }
    }
    memcpy(&lo, lo_a, sizeof lo);
    memcpy(&hi, hi_a, sizeof hi);
    memcpy(&thr_t, tt, sizeof thr_t);
    memcpy(&thr_b, tb, sizeof thr_b);
    memset(hcount, 0, (size_t)(TILE * B) * sizeof(int32_t));
    const vf zf = {0}, iwv = zf + iw, mgv = zf + mg;
    const vf ylo = mgv - 1.0f, yhi = mgv + overflow + 1.0f; /* beyond: under/overflow anyway */
    const vi zero = {0}, top_bin = zero + (int32_t)(B - 1), sign = zero + 0x7FFFFFFF;
    for (int64_t i = 0; i < n; i++) {
        const float *row = xg + (rows ? rows[i] : i) * d + jt;
        if (i + PREFETCH < n) { /* rows are d floats apart: the hardware prefetcher does not
                                   follow them across pages */
            __builtin_prefetch(xg + (rows ? rows[i + PREFETCH] : i + PREFETCH) * d + jt);
        }
        const vf v = load_row(row, tw) + 0.0f; /* -0.0 -> +0.0, as the torch path */
        const vd d0 = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), vd);
        const vd d1 = __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), vd);
        s0 += d0;
        s1 += d1;
        q0 += d0 * d0;
        q1 += d1 * d1;
        /* a NaN, once seen, sticks (torch.minimum / amin propagate it) */
        const vi nan_v = (vi)(v != v);
        lo = select_f(((vi)(v < lo) | nan_v) & (vi)(lo == lo), v, lo);
        hi = select_f(((vi)(v > hi) | nan_v) & (vi)(hi == hi), v, hi);
        np -= (vi)(v > 0.0f);
        /* bin = clamp(floor(v * iw) - m, 0, N+1), NaN -> N+1: v * iw is exact (iw a power
         * of two); clamped into a small range first, so the int conversion is exact */
        vf y = v * iwv;
        y = select_f((vi)(y < ylo), ylo, y);
        y = select_f((vi)(y > yhi) | nan_v, yhi, y);
        vi f = __builtin_convertvector(y, vi); /* toward zero */
        f += (vi)(__builtin_convertvector(f, vf) > y); /* -1 where that was up: floor */
        vi bin = f - __builtin_convertvector(mgv, vi);
        bin = select_i(bin < zero, zero, bin);
        bin = select_i(bin > top_bin, top_bin, bin);
        int32_t ba[TILE];
        memcpy(ba, &bin, sizeof ba);
        for (int t = 0; t < TILE; t++) hcount[t * B + ba[t]] += 1;
        const int32_t lab = label[i];
        if (lab >= 0 && lab < L) {
            double *ls = label_sum + (g * L + lab) * d + jt;
            if (tw == TILE) { /* fixed-size copies: plain vector loads and stores */
                vd l0, l1;
                memcpy(&l0, ls, sizeof l0);
                memcpy(&l1, ls + 8, sizeof l1);
                l0 += d0;
                l1 += d1;
                memcpy(ls, &l0, sizeof l0);
                memcpy(ls + 8, &l1, sizeof l1);
            } else {
                label_tail(ls, d0, d1, tw);
            }
        }
        const vi bits = (vi)v;
        const vi o = bits ^ ((bits >> 31) & sign);
        const vi cand = (o >= thr_t) | (~o >= thr_b);
        uint64_t c8[TILE / 2];
        memcpy(c8, &cand, sizeof c8);
        uint64_t any = 0;
        for (int t = 0; t < TILE / 2; t++) any |= c8[t];
        if (!any) continue;
        int32_t oa[TILE], ca[TILE];
        memcpy(oa, &o, sizeof oa);
        memcpy(ca, &cand, sizeof ca);
        heap_candidates(oa, ca, LOW - 1 - tok[i], tt, tb, ht, hb, K);
        memcpy(&thr_t, tt, sizeof thr_t);
        memcpy(&thr_b, tb, sizeof thr_b);
    }
    double sa[TILE], qa[TILE];
    int32_t na[TILE];
    memcpy(sa, &s0, sizeof s0);
    memcpy(sa + 8, &s1, sizeof s1);
    memcpy(qa, &q0, sizeof q0);
    memcpy(qa + 8, &q1, sizeof q1);
    memcpy(lo_a, &lo, sizeof lo);
    memcpy(hi_a, &hi, sizeof hi);
    memcpy(na, &np, sizeof na);
    int64_t *hrow = hist + j * B;
    for (int64_t t = 0; t < tw; t++) {
        sum[j + t] += sa[t];
        sumsq[j + t] += qa[t];
        mn[j + t] = lo_a[t];
        mx[j + t] = hi_a[t];
        npos[j + t] += na[t];
        for (int64_t b = 0; b < B; b++) hrow[t * B + b] += hcount[t * B + b];
    }
}

int nd_profile_update(int64_t G, int64_t n, int64_t d, int64_t j0, int64_t j1,
                      const float *const *x, const int64_t *rows /* [n] or NULL */,
                      const int64_t *tok, const int32_t *label, int32_t L,
                      double *sum, double *sumsq, float *mn, float *mx, int64_t *npos,
                      int64_t *hist, int32_t nbins, const float *inv_w, const float *m,
                      double *label_sum, int64_t *top, int64_t *bottom, int32_t K,
                      int32_t *hist_buf /* [TILE, N+2] scratch */) {
    const int64_t B = nbins + 2;
    for (int64_t g = 0; g < G; g++) {
        for (int64_t jt = j0; jt < j1; jt += TILE) {
            const int64_t tw = (j1 - jt < TILE) ? (j1 - jt) : TILE;
            tile_update(x[g], rows, tok, label, L, n, d, jt, tw, g * d + jt, sum, sumsq, mn, mx,
                        npos, hist, B, inv_w[g], m[g], label_sum, g, top, bottom, K, hist_buf);
        }
    }
    return 0;
}

int nd_tile(void) { return TILE; }
