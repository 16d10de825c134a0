/* The profile reduction on the CPU in one pass over each captured value (neurondb.profile.native).
 *
 * For the neurons [j0, j1) of G layers of width d, over n captured rows (tokens): row i of
 * layer g is x[g] + (rows ? rows[i] : i) * d (rows: the captured rows of a whole [B*T, d]
 * activation, so that nothing is copied out of the model's tensor first):
 *   sum, sumsq   float64 [G, d]          += h, h*h (h as float32, summed in float64, row order)
 *   mn, mx       float32 [G, d]          running min / max (a NaN sticks, as torch.minimum)
 *   npos         int64   [G, d]          += count(h > 0)
 *   hist         int32   [G, d, N+2]     += one count per value in bin
 *                                         clamp(floor(h * inv_w[g]) - m[g], 0, N+1), NaN -> N+1
 *                                         (the caller moves these counts into its int64 ones
 *                                         before they could overflow)
 *   label_sum    float64 [G, L, d]       += h for the row's label (label < 0: none)
 *   top, bottom  int64   [G, d, K]       the K largest keys seen, as a min-heap per neuron
 *                                         (EMPTY = INT64_MIN; the caller sorts them at the end)
 * Keys are those of neurondb/profile/keys.py: the float32 bits of h + 0.0f mapped to an int32 that
 * sorts like the float, times 2**32, plus 2**32 - 1 - tok (bottom: the complement of the ordered
 * value), so keys are unique per token and the top-K is exact, ties broken by token.
 *
 * Every neuron is reduced in row order by one thread, so the result does not depend on how the
 * neurons are split between threads: nd_profile_update_all shares them out with OpenMP (torch's
 * own threads, see there); without a shared OpenMP runtime the caller runs nd_profile_update on
 * disjoint ranges in threads of its own.
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <string.h>

#define VL 16   /* floats per vector */
#define TILE 32 /* neurons per tile: two vectors, a 128-byte pair of cache lines per row */
#define LOW 4294967296LL /* 2**32 */
#define PREFETCH 32 /* rows ahead */

static inline int64_t ordered_of(float v) { /* v: already +0.0 for a zero */
    int32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (int64_t)(bits ^ ((bits >> 31) & 0x7FFFFFFF));
}

/* floor division by 2**32 (arithmetic shift: gcc and clang shift signed values arithmetically) */
static inline int64_t hi_of(int64_t key) { return key >> 32; }

/* a min-heap of K keys: replace the root by key and sift it down (the smaller child chosen
 * without a branch: heap updates are rare but their comparisons are unpredictable) */
static inline void heap_replace(int64_t *h, int32_t K, int64_t key) {
    int32_t i = 0;
    for (;;) {
        const int32_t l = 2 * i + 1;
        if (l >= K) break;
        const int32_t r = l + 1;
        const int32_t c = (r < K && h[r] < h[l]) ? r : l;
        if (h[c] >= key) break;
        h[i] = h[c];
        i = c;
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

/* lane t's offset (first + t) * B into a tile's histogram counts */
static inline vi offsets_of(int64_t B, int first) {
    vi o;
    int32_t a[VL];
    for (int t = 0; t < VL; t++) a[t] = (int32_t)((first + t) * B);
    memcpy(&o, a, sizeof o);
    return o;
}

/* the 64 bytes of one vector of a row; past the range's end (w < VL) the lanes read 0 */
static inline vf load_row(const float *row, int64_t w) {
    vf v;
    if (w == VL) {
        memcpy(&v, row, sizeof v);
    } else {
        float tmp[VL] = {0};
        if (w > 0)
            memcpy(tmp, row, (size_t)w * sizeof(float));
        memcpy(&v, tmp, sizeof v);
    }
    return v;
}

/* label sums of a tile narrower than TILE (the end of a range) */
__attribute__((noinline)) static void label_tail(double *ls, vd d0, vd d1, int64_t tw) {
    double a[VL];
    memcpy(a, &d0, sizeof d0);
    memcpy(a + 8, &d1, sizeof d1);
    for (int64_t t = 0; t < tw; t++) ls[t] += a[t];
}

/* One vector's running statistics (VL = 16 neurons). */
typedef struct {
    vd s0, s1, q0, q1; /* sums of h and h*h, lanes 0-7 and 8-15 */
    vf lo, hi;         /* extremes over the non-NaN values */
    vi np, nan_seen;   /* count of h > 0; lanes that saw a NaN */
    vi thr_t, thr_b;   /* the ordered value a top / bottom entry must reach */
} Acc;

/* What a row adds to one vector of neurons; returns the lanes that may enter a heap, and
 * leaves the bins (offset by lane) in bin_out. */
static inline __attribute__((always_inline)) vi step(Acc *a, vf v, vf iwv, vf ylo, vf yhi,
                                                     vi mgi, vi top_bin, vi lane_off,
                                                     vi *bin_out, vd *d0o,
                                                     vd *d1o) {
    const vi zero = {0}, sign = zero + 0x7FFFFFFF;
    v = v + 0.0f; /* -0.0 -> +0.0, as the torch path */
    const vd d0 = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), vd);
    const vd d1 = __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), vd);
    a->s0 += d0;
    a->s1 += d1;
    a->q0 += d0 * d0;
    a->q1 += d1 * d1;
    /* a NaN, once seen, sticks (torch.minimum / amin propagate it): the extremes skip NaNs
     * (a comparison with one is false) and the lanes that saw one are NaN at the end */
    const vi nan_v = (vi)(v != v);
    a->nan_seen |= nan_v;
    a->lo = select_f((vi)(v < a->lo), v, a->lo);
    a->hi = select_f((vi)(v > a->hi), v, a->hi);
    a->np -= (vi)(v > 0.0f);
    /* bin = clamp(floor(v * iw) - m, 0, N+1), NaN -> N+1: v * iw is exact (iw a power of
     * two); clamped into [m - 1, m + N + 2] first, so the int conversion is exact */
    vf y = v * iwv;
    y = select_f((vi)(y < ylo), ylo, y);
    y = select_f((vi)(y > yhi) | nan_v, yhi, y);
    vi f = __builtin_convertvector(y, vi); /* toward zero */
    f += (vi)(__builtin_convertvector(f, vf) > y); /* -1 where that was up: floor */
    vi bin = f - mgi; /* in [-1, N+2] */
    bin -= (vi)(bin < zero); /* -1 -> 0 */
    bin += (vi)(bin > top_bin); /* N+2 -> N+1 */
    *bin_out = bin + lane_off;
    const vi bits = (vi)v;
    const vi o = bits ^ ((bits >> 31) & sign);
    *d0o = d0;
    *d1o = d1;
    return (o >= a->thr_t) | (~o >= a->thr_b);
}

/* lane `lane` of x set to value, in registers */
static inline vi set_lane(vi x, int lane, int32_t value) {
    const vi iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const vi zero = {0};
    return select_i(iota == zero + lane, zero + value, x);
}

/* the set bits of a lane mask vector (lanes -1 or 0), as bits of an int, folded in registers */
static inline uint32_t lanes_of(vi c) {
    const vi bit = {1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8,
                    1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15};
    c &= bit;
    c |= __builtin_shufflevector(c, c, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    c |= __builtin_shufflevector(c, c, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    c |= __builtin_shufflevector(c, c, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    c |= __builtin_shufflevector(c, c, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return (uint32_t)c[0];
}

/* offer key (hi: its value part) to one min-heap; a key that enters raises the heap's
 * threshold, kept both in thr[t] and in lane t of the vector *vthr */
static inline void offer(int64_t *heap, int32_t K, int64_t hi, int64_t low, int32_t *thr, int t,
                         vi *vthr) {
    if (hi < thr[t]) return;
    const int64_t key = hi * LOW + low;
    if (key <= heap[0]) return;
    heap_replace(heap, K, key);
    thr[t] = (int32_t)hi_of(heap[0]);
    *vthr = set_lane(*vthr, t % VL, thr[t]);
}

/* The rare path, out of line so that the hot loop keeps its vectors in registers: offer the
 * row's values of the lanes in `lanes` (read again from the row: nothing goes through a
 * vector store read back lane by lane) to their heaps, and move the thresholds that rise. */
__attribute__((noinline, cold)) static void heap_candidates(
        const float *row, uint32_t lanes, int64_t low, int32_t *tt, int32_t *tb,
        int64_t *const *ht, int64_t *const *hb, int32_t K, Acc *A) {
    while (lanes) {
        const int t = __builtin_ctz(lanes);
        lanes &= lanes - 1;
        const int64_t ot = ordered_of(row[t] + 0.0f);
        offer(ht[t], K, ot, low, tt, t, &A[t / VL].thr_t);
        offer(hb[t], K, -ot - 1, low, tb, t, &A[t / VL].thr_b); /* bottom: the complement */
    }
}

static inline void add_label(double *ls, vd d0, vd d1, int64_t w) {
    if (w == VL) { /* fixed-size copies: plain vector loads and stores */
        vd l0, l1;
        memcpy(&l0, ls, sizeof l0);
        memcpy(&l1, ls + 8, sizeof l1);
        l0 += d0;
        l1 += d1;
        memcpy(ls, &l0, sizeof l0);
        memcpy(ls + 8, &l1, sizeof l1);
    } else if (w > 0) {
        label_tail(ls, d0, d1, w);
    }
}

/* one row's counts: bin[t] is lane t's offset into the tile's counts; the lanes past tw (the
 * end of a range) are padding, and their offsets would reach the next neurons' counts */
static inline void count_bins(int32_t *hcount, const int32_t *bin, int64_t tw) {
    if (tw == TILE) {
        for (int t = 0; t < TILE; t++) hcount[bin[t]] += 1;
    } else {
        for (int64_t t = 0; t < tw; t++) hcount[bin[t]] += 1;
    }
}

/* the neurons [jt, jt + tw) of one layer over the n rows (see the file comment): TILE = two
 * vectors, so each row read is one 128-byte pair of cache lines */
static void tile_update(const float *xg, const int64_t *rows, const int64_t *tok,
                        const int32_t *label, int32_t L, int64_t n, int64_t d, int64_t jt,
                        int64_t tw, int64_t j, double *sum, double *sumsq, float *mn, float *mx,
                        int64_t *npos, int32_t *hist, int64_t B, float iw, float mg,
                        double *label_sum, int64_t g, int64_t *top, int64_t *bottom, int32_t K) {
    int32_t *hcount = hist + j * B; /* the tile's rows of the counts: TILE x (N+2) int32 */
    const float overflow = (float)(B - 1);
    const int64_t w0 = tw < VL ? tw : VL, w1 = tw - w0; /* lanes used in each vector */
    int32_t tt[TILE], tb[TILE], was_nan[TILE];
    int64_t *ht[TILE], *hb[TILE];
    float lo_a[TILE], hi_a[TILE];
    for (int64_t t = 0; t < TILE; t++) {
        const int64_t k = t < tw ? t : 0; /* padding lanes mirror lane 0, never stored */
        lo_a[t] = mn[j + k];
        hi_a[t] = mx[j + k];
        was_nan[t] = (lo_a[t] != lo_a[t] || hi_a[t] != hi_a[t]) ? -1 : 0;
        if (lo_a[t] != lo_a[t]) lo_a[t] = __builtin_inff();
        if (hi_a[t] != hi_a[t]) hi_a[t] = -__builtin_inff();
        ht[t] = top + (j + k) * K; /* the state's own min-heaps, updated in place */
        hb[t] = bottom + (j + k) * K;
        tt[t] = t < tw ? (int32_t)hi_of(ht[t][0]) : INT32_MAX; /* padding: never enters */
        tb[t] = t < tw ? (int32_t)hi_of(hb[t][0]) : INT32_MAX;
    }
    Acc A[2];
    memset(A, 0, sizeof A);
    for (int h = 0; h < 2; h++) {
        memcpy(&A[h].lo, lo_a + h * VL, sizeof A[h].lo);
        memcpy(&A[h].hi, hi_a + h * VL, sizeof A[h].hi);
        memcpy(&A[h].nan_seen, was_nan + h * VL, sizeof A[h].nan_seen);
        memcpy(&A[h].thr_t, tt + h * VL, sizeof A[h].thr_t);
        memcpy(&A[h].thr_b, tb + h * VL, sizeof A[h].thr_b);
    }
    const vf zf = {0}, iwv = zf + iw, mgv = zf + mg;
    const vf ylo = mgv - 1.0f, yhi = mgv + overflow + 1.0f;
    const vi zero = {0}, top_bin = zero + (int32_t)(B - 1);
    const vi mgi = __builtin_convertvector(mgv, vi);
    const vi off0 = offsets_of(B, 0), off1 = offsets_of(B, VL);
    int32_t ba[2][TILE]; /* the bins of the last two rows */
    for (int64_t i = 0; i < n; i++) {
        const float *row = xg + (rows ? rows[i] : i) * d + jt;
        if (i + PREFETCH < n) { /* rows are d floats apart: the hardware prefetcher does not
                                   follow them across pages */
            const float *ahead = xg + (rows ? rows[i + PREFETCH] : i + PREFETCH) * d + jt;
            __builtin_prefetch(ahead);
            __builtin_prefetch(ahead + VL);
        }
        vi bin0, bin1;
        vd a0, a1, b0, b1;
        const vi c0 = step(&A[0], load_row(row, w0), iwv, ylo, yhi, mgi, top_bin, off0, &bin0,
                           &a0, &a1);
        const vi c1 = step(&A[1], load_row(row + VL, w1), iwv, ylo, yhi, mgi, top_bin, off1,
                           &bin1, &b0, &b1);
        /* the counts of the previous row's bins: its vector store has reached the cache by
         * now (reading a vector store back lane by lane at once stalls) */
        memcpy(ba[i & 1], &bin0, sizeof bin0);
        memcpy(ba[i & 1] + VL, &bin1, sizeof bin1);
        if (i > 0)
            count_bins(hcount, ba[(i - 1) & 1], tw);
        const int32_t lab = label[i];
        if (lab >= 0 && lab < L) {
            double *ls = label_sum + (g * L + lab) * d + jt;
            add_label(ls, a0, a1, w0);
            add_label(ls + VL, b0, b1, w1);
        }
        const vi cand = c0 | c1;
        uint64_t c8[VL / 2];
        memcpy(c8, &cand, sizeof c8);
        uint64_t any = 0;
        for (int t = 0; t < VL / 2; t++) any |= c8[t];
        if (!any) continue;
        heap_candidates(row, lanes_of(c0) | lanes_of(c1) << VL, LOW - 1 - tok[i], tt, tb, ht,
                        hb, K, A);
    }
    if (n > 0) /* the last row's counts */
        count_bins(hcount, ba[(n - 1) & 1], tw);
    double sa[TILE], qa[TILE];
    int32_t na[TILE];
    const vf nan_f = zf + __builtin_nanf("");
    for (int h = 0; h < 2; h++) {
        A[h].lo = select_f(A[h].nan_seen, nan_f, A[h].lo);
        A[h].hi = select_f(A[h].nan_seen, nan_f, A[h].hi);
        memcpy(sa + h * VL, &A[h].s0, sizeof A[h].s0);
        memcpy(sa + h * VL + 8, &A[h].s1, sizeof A[h].s1);
        memcpy(qa + h * VL, &A[h].q0, sizeof A[h].q0);
        memcpy(qa + h * VL + 8, &A[h].q1, sizeof A[h].q1);
        memcpy(lo_a + h * VL, &A[h].lo, sizeof A[h].lo);
        memcpy(hi_a + h * VL, &A[h].hi, sizeof A[h].hi);
        memcpy(na + h * VL, &A[h].np, sizeof A[h].np);
    }
    for (int64_t t = 0; t < tw; t++) {
        sum[j + t] += sa[t];
        sumsq[j + t] += qa[t];
        mn[j + t] = lo_a[t];
        mx[j + t] = hi_a[t];
        npos[j + t] += na[t];
    }
}

int nd_profile_update(int64_t G, int64_t n, int64_t d, int64_t j0, int64_t j1,
                      const float *const *x, const int64_t *rows /* [n] or NULL */,
                      const int64_t *tok, const int32_t *label, int32_t L,
                      double *sum, double *sumsq, float *mn, float *mx, int64_t *npos,
                      int32_t *hist, int32_t nbins, const float *inv_w, const float *m,
                      double *label_sum, int64_t *top, int64_t *bottom, int32_t K) {
    const int64_t B = nbins + 2;
    for (int64_t g = 0; g < G; g++) {
        for (int64_t jt = j0; jt < j1; jt += TILE) {
            const int64_t tw = (j1 - jt < TILE) ? (j1 - jt) : TILE;
            tile_update(x[g], rows, tok, label, L, n, d, jt, tw, g * d + jt, sum, sumsq, mn, mx,
                        npos, hist, B, inv_w[g], m[g], label_sum, g, top, bottom, K);
        }
    }
    return 0;
}

/* nd_profile_update over all the neurons [0, d) of the G layers, the (layer, tile) pairs
 * shared out by OpenMP among `threads` threads (a clause: the caller's OpenMP settings are
 * left as they are). Built with -fopenmp and loaded beside torch's libgomp, this is torch's
 * own thread pool: its workers, still spinning after the model's last operation, take their
 * tiles at once, and no second set of threads competes with them. */
int nd_profile_update_all(int64_t G, int64_t n, int64_t d, int32_t threads,
                          const float *const *x, const int64_t *rows, const int64_t *tok,
                          const int32_t *label, int32_t L, double *sum, double *sumsq,
                          float *mn, float *mx, int64_t *npos, int32_t *hist, int32_t nbins,
                          const float *inv_w, const float *m, double *label_sum, int64_t *top,
                          int64_t *bottom, int32_t K) {
    const int64_t B = nbins + 2, nt = (d + TILE - 1) / TILE;
    (void)threads; /* unused without OpenMP: one thread */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t q = 0; q < G * nt; q++) {
        const int64_t g = q / nt, jt = (q % nt) * TILE;
        const int64_t tw = (d - jt < TILE) ? (d - jt) : TILE;
        tile_update(x[g], rows, tok, label, L, n, d, jt, tw, g * d + jt, sum, sumsq, mn, mx,
                    npos, hist, B, inv_w[g], m[g], label_sum, g, top, bottom, K);
    }
    return 0;
}

/* OpenMP's thread count for a parallel region started now (0: built without OpenMP) */
int nd_openmp_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 0;
#endif
}

int nd_tile(void) { return TILE; }
