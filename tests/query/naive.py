"""Naive per-example reference implementations of SPEC §2–§4, written straight from the
formulas with Python loops, to check the vectorised kernels against."""

from __future__ import annotations

import math

import numpy as np

from neurondb.testing_stores import to_storage


def stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """The float32 values a store of ``dtype`` gives back for ``x``."""
    s = to_storage(np.asarray(x, np.float32), dtype)
    if dtype == "bfloat16":
        return (s.astype(np.uint32) << 16).view(np.float32)
    return s.astype(np.float32)


def baseline(train: np.ndarray) -> np.ndarray:
    """``[n, S, d]`` -> mean over examples ``[S, d]`` (float64, one example at a time)."""
    total = np.zeros(train.shape[1:], np.float64)
    for x in train:
        total += x.astype(np.float64)
    return total / len(train)


def accuracy(ev: np.ndarray, y: np.ndarray, base: np.ndarray, positive: int) -> np.ndarray:
    """``acc[t, i] = mean_x 1[(h(x,t,i) > base[t,i]) == (y(x) == positive)]``, loop over x."""
    hits = np.zeros(base.shape, np.float64)
    for x, label in zip(ev, y):
        for t in range(base.shape[0]):
            for i in range(base.shape[1]):
                hits[t, i] += (float(x[t, i]) > base[t, i]) == (label == positive)
    return hits / len(y)


def prompt_predictivity(ev, y, base, over_classes="mean"):
    """``(pred_k [d], peak slot [d], acc at peak [d])`` of one prompt (SPEC §2 steps 2–4)."""
    present = sorted(set(int(c) for c in y if c >= 0))
    keep = np.asarray([c >= 0 for c in y])
    ev, y = ev[keep], np.asarray(y)[keep]
    tasks = [present[-1]] if len(present) == 2 else present
    accs = [accuracy(ev, y, base, c) for c in tasks]
    preds = [np.maximum(a, 1 - a) for a in accs]
    pred = preds[0] if len(tasks) == 1 else (np.mean(preds, 0) if over_classes == "mean"
                                                else np.max(preds, 0))
    S, d = pred.shape
    best_t = np.zeros(d, int)
    for i in range(d):
        for t in range(S):
            if pred[t, i] > pred[best_t[i], i]:
                best_t[i] = t
    acc_peak = np.zeros(d)
    for i in range(d):
        t = best_t[i]
        vals = [max(a[t, i], 1 - a[t, i]) for a in accs]
        acc_peak[i] = accs[int(np.argmax(vals))][t, i]
    return np.array([pred[best_t[i], i] for i in range(d)]), best_t, acc_peak


def predictivity(trains, evals, labels, over_prompts="mean", over_classes="mean"):
    """Per prompt k: ``trains[k]`` ``[n, S, d]``, ``evals[k]`` ``[m, S, d]`` (stored values),
    ``labels[k]`` ``[m]``. Returns ``(score [d], per_prompt [K, d], slot of best prompt [d],
    acc of best prompt [d])``."""
    res = [prompt_predictivity(e, y, baseline(t), over_classes)
           for t, e, y in zip(trains, evals, labels)]
    P = np.stack([r[0] for r in res])
    score = P.mean(0) if over_prompts == "mean" else P.min(0)
    d = P.shape[1]
    kb = [int(np.argmax(P[:, i])) for i in range(d)]
    return (score, P, np.array([res[kb[i]][1][i] for i in range(d)]),
            np.array([res[kb[i]][2][i] for i in range(d)]))


def attribution(h, g, examples, agg="sum", abs_when="token", method="attribution"):
    """``h``, ``g`` ``[rows, d]`` with example index per row -> mean over examples of the
    token aggregate of ``h*g`` (or ``h``, ``g``)."""
    d = h.shape[1]
    total = np.zeros(d)
    ids = list(dict.fromkeys(int(e) for e in examples))
    for e in ids:
        rows = [r for r in range(len(examples)) if examples[r] == e]
        for i in range(d):
            vals = []
            for r in rows:
                v = {"attribution": float(h[r, i]) * float(g[r, i]), "activation": float(h[r, i]),
                     "gradient": float(g[r, i])}[method]
                vals.append(abs(v) if abs_when == "token" else v)
            a = {"sum": sum(vals), "mean": sum(vals) / len(vals), "max": max(vals)}[agg]
            total[i] += abs(a) if abs_when == "after" else a
    return total / len(ids)


def spearman(a, b):
    """Spearman's rho as the Pearson correlation of average ranks (ties averaged)."""
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(x):
            j = i
            while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r
    ra, rb = ranks(list(a)), ranks(list(b))
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb)


def topk_overlap(a, b, k):
    top = lambda x: set(sorted(range(len(x)), key=lambda i: (-x[i], i))[:k])  # noqa: E731
    return len(top(a) & top(b)) / k


def on_overlap(xa, xb):
    """Cosine of the binary vectors ``x > 0`` (any shapes, flattened)."""
    a = [v > 0 for v in np.ravel(xa)]
    b = [v > 0 for v in np.ravel(xb)]
    both = sum(1 for p, q in zip(a, b) if p and q)
    return both / math.sqrt(sum(a) * sum(b))
