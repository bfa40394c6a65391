"""Compiled kernels for the layout of codec 5 (``sub-zz-ctx-planes``): the context/class permutation
done by counting (bucket cursors) in a few linear passes, without argsort, index arrays or scatters.

numpy needs a stable argsort, two gathers and a scatter per chunk (5x slower than decoding codec 2);
these loops do the same in one pass over the elements, writing the output in element order. Imported
lazily (numba costs ~0.5 s to import): only a process that encodes or decodes a codec-5 object pays it.
Compiled once per machine (``cache=True``), in numba's cache next to this file or NUMBA_CACHE_DIR.
``nogil=True``: chunk workers in threads run them in parallel.

The byte layout is the one of ``docs/format.md`` (codec 5); ``planecoding``'s numpy functions are
the reference implementation and the tests check that both agree.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _ctx(b, e):  # the base element's 8 bits below the sign (exponent of fp32/bf16)
    return int(((np.uint64(b) << np.uint64(1)) >> np.uint64(8 * e - 8)) & np.uint64(0xFF))


@njit(cache=True, nogil=True, inline="always")
def _cls(v, e):  # index of the highest nonzero byte of v (0 for v < 256)
    u = np.uint64(v)
    k = 0
    for q in range(1, e):
        if u >> np.uint64(8 * q):
            k = q
    return k


@njit(cache=True, nogil=True)
def unpack_classes(packed, m, w):
    """The ``m`` classes packed ``w`` bits each (first in the high bits); w = 0: all class 0."""
    cls = np.zeros(m, np.uint8)
    if w == 0:
        return cls
    per = 8 // w
    mask = (1 << w) - 1
    p = 0
    for byte in packed:
        for t in range(per):
            if p == m:
                return cls
            cls[p] = (byte >> (8 - w * (t + 1))) & mask
            p += 1
    return cls


@njit(cache=True, nogil=True)
def histograms(nz, idx, base, cls, e):
    """Decoder pass 1: (count of changed elements per context, counts per (class, context)), the
    classes ``cls`` being in context order. A class >= e makes the counts sum short (the caller checks).
    The changed elements are ``idx`` when it is not empty (sparse deltas), else the 1s of ``nz``."""
    h = np.zeros(256, np.int64)
    if idx.size:
        for i in idx:
            h[_ctx(base[i], e)] += 1
    else:
        for i in range(base.size):
            if nz[i]:
                h[_ctx(base[i], e)] += 1
    h2 = np.zeros((e, 256), np.int64)
    p = 0
    for c in range(256):
        for _ in range(h[c]):
            k = cls[p]
            if k < e:
                h2[k, c] += 1
            p += 1
    return h, h2


@njit(cache=True, nogil=True)
def _cursors(h, h2, e):
    m = h.sum()
    cur1 = np.zeros(256, np.int64)
    for c in range(1, 256):
        cur1[c] = cur1[c - 1] + h[c - 1]
    s = np.zeros(e + 1, np.int64)
    for k in range(e):
        s[k + 1] = s[k] + h2[k].sum()
    cur2 = np.zeros((e, 256), np.int64)
    for k in range(e):
        acc = s[k]
        for c in range(256):
            cur2[k, c] = acc
            acc += h2[k, c]
    off = np.zeros(e + 1, np.int64)  # plane k holds positions s[k] .. m-1
    for k in range(e):
        off[k + 1] = off[k] + m - s[k]
    return cur1, cur2, s, off


@njit(cache=True, nogil=True)
def assemble(nz, idx, base, cls, h, h2, planes, out):
    """Decoder pass 2: ``out[i] = base[i] + unzigzag(z[i])`` (wrapping), z read off the concatenated
    planes (plane k = its leading then trailing bytes, positions s_k … m−1). With ``idx`` (sparse
    deltas) only those elements are visited: ``out`` must hold a copy of ``base`` already."""
    e = base.itemsize
    cur1, cur2, s, off = _cursors(h, h2, e)
    d = np.zeros(8, np.int64)  # byte q of the element at position j is planes[d[q] + j]
    for q in range(e):
        d[q] = off[q] - s[q]
    one = np.uint64(1)
    zero = np.uint64(0)
    sparse = idx.size > 0
    for t in range(idx.size if sparse else base.size):
        if sparse:
            i = idx[t]
        else:
            i = t
            if not nz[i]:
                out[i] = base[i]
                continue
        b = base[i]
        c = _ctx(b, e)
        k = cls[cur1[c]]
        cur1[c] += 1
        j = cur2[k, c]
        cur2[k, c] += 1
        v = np.uint64(planes[d[0] + j])
        if k >= 1:
            v |= np.uint64(planes[d[1] + j]) << np.uint64(8)
            if k >= 2:
                v |= np.uint64(planes[d[2] + j]) << np.uint64(16)
                if k >= 3:
                    for q in range(3, k + 1):
                        v |= np.uint64(planes[d[q] + j]) << np.uint64(8 * q)
        out[i] = np.uint64(b) + ((v >> one) ^ (zero - (v & one)))  # stored mod 2^(8e)


@njit(cache=True, nogil=True)
def split(z, idx, base, e):
    """Encoder: (classes in context order as uint8, counts per context, counts per (class, context),
    concatenated planes) of the changed elements of ``z`` (``idx`` when not empty: sparse deltas);
    the inverse of ``assemble``."""
    sparse = idx.size > 0
    nit = idx.size if sparse else z.size
    h = np.zeros(256, np.int64)
    for t in range(nit):
        i = idx[t] if sparse else t
        if z[i]:
            h[_ctx(base[i], e)] += 1
    m = h.sum()
    cur1 = np.zeros(256, np.int64)
    for c in range(1, 256):
        cur1[c] = cur1[c - 1] + h[c - 1]
    cls = np.empty(m, np.uint8)
    h2 = np.zeros((e, 256), np.int64)
    for t in range(nit):
        i = idx[t] if sparse else t
        if z[i]:
            c = _ctx(base[i], e)
            k = _cls(z[i], e)
            cls[cur1[c]] = k
            cur1[c] += 1
            h2[k, c] += 1
    cur1, cur2, s, off = _cursors(h, h2, e)
    planes = np.empty(off[e], np.uint8)
    for t in range(nit):
        i = idx[t] if sparse else t
        v = np.uint64(z[i])
        if v:
            c = _ctx(base[i], e)
            k = _cls(v, e)
            j = cur2[k, c]
            cur2[k, c] += 1
            for q in range(k + 1):
                planes[off[q] + j - s[q]] = np.uint8((v >> np.uint64(8 * q)) & np.uint64(0xFF))
    return cls, h, h2, planes
