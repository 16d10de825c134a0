"""Naive re-implementations of the reference code's conventions (Skill-Neuron, Robust-Neurons),
written from their procedures with Python loops, to check neurondb's options against.

* :func:`finfo` — Skill-Neuron ``src/skillneuron.py``: per layer, the first ``int(p*d)``
  neurons of ``sorted(range(d), key=lambda i: -h[l][i])``.
* :func:`union_fill` — the multi-class branch of the same script: the primary task's
  selection, then neurons in the auxiliary task's order until ``int(d*2*p)`` are set.
* :func:`balance` / :func:`binarize` — ``src/helper/binarize.py``.
* :func:`subtask_predictivity` — a subtask's baseline, accuracy per position, ``|acc-0.5|``,
  max over positions (returned as ``max(acc, 1-acc)``, the same order plus 0.5).
* :func:`slots_first` — one-vs-rest with each class's max over positions taken first.
* :func:`mean_p` — Robust-Neurons' mean over layers of Spearman's p-value (t approximation).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def finfo(h: list[np.ndarray], p: float) -> list[set[int]]:
    """Per layer, the set of the first ``int(p*d)`` neurons by decreasing ``h`` (stable)."""
    out = []
    for v in h:
        d = len(v)
        idx = sorted(range(d), key=lambda i: -v[i])
        out.append({idx[j] for j in range(int(p * d))})
    return out


def union_fill(h_main: list[np.ndarray], h_aux: list[np.ndarray], p: float) -> list[set[int]]:
    """Skill-Neuron's multi-class selection at ``p``: ``finfo(main, p)`` then the auxiliary
    task's order until ``int(d*2*p)`` neurons are chosen (the file it saves is named ``2p``)."""
    info = finfo(h_main, p)
    for layer, v in enumerate(h_aux):
        d = len(v)
        order = sorted(range(d), key=lambda k: -v[k])
        j = 0
        while len(info[layer]) != int(d * 2 * p):
            info[layer].add(order[j])
            j += 1
    return info


def balance(labels: list[int]) -> list[bool]:
    """binarize.balance: keep a sample while its class's incremented count is below the
    smaller class's size."""
    pos = sum(labels)
    neg = len(labels) - pos
    ths = min(pos, neg)
    cnt = [0, 0]
    keep = []
    for y in labels:
        cnt[y] += 1
        keep.append(cnt[y] < ths)
    return keep


def binarize(labels: list[int], n: int) -> dict[str, list[int]]:
    """Per subtask, the binary label of each example (-1: not in the subtask, or dropped by
    balancing); examples in the given order."""
    pn, neu = ([0, 2], 1) if n == 3 else ([1, 3], 2)
    out = {}
    idx_pn = [i for i, y in enumerate(labels) if y in pn]
    lab_pn = [labels[i] // 2 for i in idx_pn]   # 0, 2 -> 0, 1 (of 3); 1, 3 -> 0, 1 (of 4)
    keep = balance(lab_pn)
    y = [-1] * len(labels)
    for i, b, k in zip(idx_pn, lab_pn, keep):
        if k:
            y[i] = b
    out["pn"] = y
    lab_neu = [int(v == neu) for v in labels]
    keep = balance(lab_neu)
    out["neu"] = [b if k else -1 for b, k in zip(lab_neu, keep)]
    return out


def balance_seeded(labels: list[int], seed: int) -> list[bool]:
    """The seeded option: ``min(n0, n1)`` of each class drawn with ``default_rng(seed)``,
    class 0 first, candidates in example order."""
    rng = np.random.default_rng(seed)
    ths = min(labels.count(0), labels.count(1))
    keep = [False] * len(labels)
    for b in (0, 1):
        cand = [i for i, y in enumerate(labels) if y == b]
        for i in rng.choice(np.asarray(cand), size=ths, replace=False):
            keep[int(i)] = True
    return keep


def subtask_predictivity(train: np.ndarray, y_train: list[int], ev: np.ndarray,
                         y_ev: list[int]) -> np.ndarray:
    """``train`` ``[n, S, d]``, ``ev`` ``[m, S, d]`` (stored values), binary labels with -1
    for examples left out. Baseline = mean over kept training examples per position;
    ``acc[t, i]`` over kept evaluation examples; returns ``max_t max(acc, 1 - acc)`` ``[d]``."""
    S, d = train.shape[1:]
    base = np.zeros((S, d))
    n = 0
    for x, y in zip(train, y_train):
        if y >= 0:
            base += x.astype(np.float64)
            n += 1
    base /= n
    hits = np.zeros((S, d))
    m = 0
    for x, y in zip(ev, y_ev):
        if y < 0:
            continue
        m += 1
        for t in range(S):
            for i in range(d):
                hits[t, i] += (float(x[t, i]) > base[t, i]) == (y == 1)
    acc = hits / m
    return np.max(np.maximum(acc, 1 - acc), axis=0)


def slots_first(train: np.ndarray, ev: np.ndarray, y_ev: list[int], n_classes: int,
                over_classes: str = "mean") -> np.ndarray:
    """One-vs-rest with the max over positions per class first, then mean (or max) over
    classes ``[d]``; baseline = mean of all training examples."""
    base = train.astype(np.float64).mean(0)
    S, d = base.shape
    peaks = []
    for c in range(n_classes):
        hits = np.zeros((S, d))
        for x, y in zip(ev, y_ev):
            for t in range(S):
                for i in range(d):
                    hits[t, i] += (float(x[t, i]) > base[t, i]) == (y == c)
        acc = hits / len(y_ev)
        peaks.append(np.max(np.maximum(acc, 1 - acc), axis=0))
    return np.mean(peaks, 0) if over_classes == "mean" else np.max(peaks, 0)


def mean_p(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over layers of Spearman's two-sided p (``t = r sqrt((n-2)/(1-r^2))``, n-2 dof)."""
    ps = []
    for a, b in pairs:
        r = stats.pearsonr(stats.rankdata(a), stats.rankdata(b))[0]
        n = len(a)
        t = r * math.sqrt((n - 2) / (1 - r * r))
        ps.append(2 * stats.t.sf(abs(t), n - 2))
    return float(np.mean(ps))


def near_base(ev_stored: np.ndarray, base: np.ndarray, storage: str = "float16") -> np.ndarray:
    """Per ``(t, i)``, how many stored values equal the largest ``storage`` value ``<= base``
    or the next one above it (the only stored values whose side of ``base`` rounding can
    have flipped), by scanning every value."""
    assert storage == "float16"
    S, d = base.shape
    out = np.zeros((S, d), int)
    for t in range(S):
        for i in range(d):
            lo = np.float16(base[t, i])
            if float(lo) > base[t, i]:
                lo = np.nextafter(lo, np.float16(-np.inf))
            hi = np.nextafter(lo, np.float16(np.inf))
            for x in ev_stored[:, t, i]:
                if np.float16(x) == lo or np.float16(x) == hi:
                    out[t, i] += 1
    return out
