"""Compiled kernels for the layout of codec 5 (``sub-zz-ctx-planes``): the context and class
permutations done as counting sorts, in a few linear passes over flat arrays.

Each pass is one simple loop: computing the contexts, counting, gluing the planes back into integers
(vectorised by LLVM), and two scatters/gathers through a cursor table (one cursor per context, then
one per byte-length class). Measured on this project's 2-core VMs, splitting the work this way is
2-3x faster than one fused pass that keeps a cursor per (class, context) and reads each element's
bytes off several planes: the fused loop does far more work per element than the separate ones.
Indices are unsigned where they come from tables (no negative-index wrap check in the hot loops).

Imported lazily (numba costs ~0.5 s to import): only a process that encodes or decodes a codec-5
object pays it. Compiled once per machine (``cache=True``), in numba's cache next to this file or
NUMBA_CACHE_DIR. ``nogil=True``: chunk workers in threads run them in parallel.

The byte layout is the one of ``docs/format.md`` (codec 5); ``planecoding``'s numpy functions are
the reference implementation and the tests check that both agree.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _contexts(base, ctx):
    """Per element: the 8 bits below the sign of the base element (exponent of fp32/bf16), uint8."""
    e = base.itemsize
    for i in range(base.size):
        ctx[i] = np.uint8(_context(np.uint64(base[i]), e))


@njit(cache=True, nogil=True, inline="always")
def _context(b, e):
    """The context of one base element ``b`` (uint64) of ``e`` bytes: the 8 bits below its sign."""
    return ((b << np.uint64(1)) >> np.uint64(8 * e - 8)) & np.uint64(0xFF)


@njit(cache=True, nogil=True)
def _sparse_cursors(idx, base):
    """Where each context's changed elements (``idx``) start in context order (uint64, by context)."""
    e = base.itemsize
    h = np.zeros(256, np.uint64)
    for i in idx:
        h[_context(np.uint64(base[i]), e)] += np.uint64(1)
    cur = np.zeros(256, np.uint64)
    acc = np.uint64(0)
    for c in range(256):
        cur[c] = acc
        acc += h[c]
    return cur


@njit(cache=True, nogil=True)
def _context_cursors(bits, ctx):
    """Where, in context order, each context's changed elements (``bits`` 1) start, for two lanes:
    column 0 for the first half of the elements, column 1 for the second (uint64). Two halves walked
    in step give the CPU two independent chains of cursor updates."""
    half = ctx.size // 2
    h = np.zeros((256, 4), np.uint64)  # two counters per lane: no store-to-load chain
    for i in range(half):
        h[np.uint64(ctx[i]), np.uint64(i & 1)] += np.uint64(bits[i])
    for i in range(half, ctx.size):
        h[np.uint64(ctx[i]), np.uint64(2 + (i & 1))] += np.uint64(bits[i])
    cur = np.zeros((256, 2), np.uint64)
    acc = np.uint64(0)
    for c in range(256):
        cur[c, 0] = acc
        acc += h[c, 0] + h[c, 1]
        cur[c, 1] = acc
        acc += h[c, 2] + h[c, 3]
    return cur


@njit(cache=True, nogil=True)
def _lane_walk(bits, ctx, cur, src, dst, gather):
    """The context permutation: the k-th changed element of context c (in element order) is position
    ``start(c) + k`` of context order. ``gather``: ``dst[i] = src[pos]`` (0 for unchanged elements),
    else ``dst[pos] = src[i]`` (unchanged elements write to the spare last slot of ``dst``)."""
    zero = np.uint64(0)
    half = ctx.size // 2
    spare = np.uint64(dst.size - 1)
    for t in range(half):
        for g in range(2):
            i = t + g * half
            bit = np.uint64(bits[i])
            c = np.uint64(ctx[i])
            p = cur[c, g]
            cur[c, g] = p + bit
            if gather:
                dst[i] = np.uint64(src[p]) & (zero - bit)
            else:
                dst[p if bit else spare] = src[i]
    for i in range(2 * half, ctx.size):
        bit = np.uint64(bits[i])
        c = np.uint64(ctx[i])
        p = cur[c, 1]
        cur[c, 1] = p + bit
        if gather:
            dst[i] = np.uint64(src[p]) & (zero - bit)
        else:
            dst[p if bit else spare] = src[i]


@njit(cache=True, nogil=True)
def _class_counts(cls, m):
    h = np.zeros((9, 4), np.int64)
    for p in range(m):
        h[cls[p], p & 3] += 1
    counts = np.zeros(9, np.int64)
    for k in range(9):
        counts[k] = h[k, 0] + h[k, 1] + h[k, 2] + h[k, 3]
    return counts


@njit(cache=True, nogil=True)
def unpack_bits(packed, n, bits):
    """The ``n`` bits of ``packed`` (most significant first) as 0/1 bytes into ``bits``; their sum."""
    full = n >> 3
    m = 0
    for b in range(full):
        byte = packed[b]
        m += _POPCOUNT[byte]
        for t in range(8):
            bits[8 * b + t] = (byte >> (7 - t)) & 1
    for i in range(8 * full, n):
        bits[i] = (packed[full] >> (7 - (i & 7))) & 1
        m += bits[i]
    return m


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


@njit(cache=True, nogil=True)
def unpack_classes(packed, m, e, cls):
    """Classes packed ``w = 1, 2, 4`` bits each for e = 2, 4, 8 (first in the high bits) into ``cls``
    (room for m + 8); the count per class 0..8, where [8] counts every class >= e."""
    w = 1 if e == 2 else (2 if e == 4 else (4 if e == 8 else 0))
    counts = np.zeros(9, np.int64)
    if w == 0:
        cls[: m + 8] = 0
        counts[0] = m
        return counts
    per = 8 // w
    msk = (1 << w) - 1
    nb = (m + per - 1) // per
    for b in range(nb):
        byte = packed[b]
        for t in range(per):
            cls[b * per + t] = (byte >> (8 - w * (t + 1))) & msk
    full = m // per  # bytes holding ``per`` symbols; the last, partial one is counted symbol by symbol
    h = np.zeros((256, 4), np.int64)  # histogram of the packed bytes (four counters per value)
    for b in range(full):
        h[packed[b], b & 3] += 1
    c16 = np.zeros(16, np.int64)
    for v in range(256):
        tot = h[v, 0] + h[v, 1] + h[v, 2] + h[v, 3]
        if tot:
            for t in range(per):
                c16[(v >> (8 - w * (t + 1))) & msk] += tot
    for t in range(m - full * per):
        c16[(packed[full] >> (8 - w * (t + 1))) & msk] += 1
    for k in range(16):
        counts[min(k, 8) if k < e else 8] += c16[k]
    return counts


@njit(cache=True, nogil=True)
def _class_starts(counts, e):
    s = np.zeros(e + 1, np.int64)
    for k in range(e):
        s[k + 1] = s[k] + counts[k]
    return s


@njit(cache=True, nogil=True)
def decode(bits, idx, cls, s, planes, base, out, zp, zc, ctx):
    """``out = base + unzigzag(z)`` (wrapping) for the changed elements (``bits`` 1), else ``base``.
    ``idx``: the changed elements' indices when few changed (then only they are visited), else empty.
    ``cls``: classes in context order; ``s``: class starts; ``planes``: plane k's bytes (leading then
    trailing, positions s_k ... m-1) back to back. ``zp``, ``zc`` (m + 1 elements like ``base``) and
    ``ctx`` (n bytes) are scratch."""
    e = base.itemsize
    m = s[e]
    # 1. z in plane order (class-major): plane k gives byte k of positions s_k ... m-1
    p0 = planes[:m]
    for j in range(m):
        zp[j] = p0[j]
    off = m
    for q in range(1, e):
        n = m - s[q]
        src = planes[off : off + n]
        dst = zp[s[q] : m]
        sh = np.uint64(8 * q)
        for j in range(n):
            dst[j] |= np.uint64(src[j]) << sh
        off += n
    # 2. into context order: the stable sort by class undone (nothing to undo with a single class)
    single = False
    for k in range(e):
        single |= s[k + 1] - s[k] == m
    if single:
        zc = zp
    else:
        _class_walk(cls, s, zp, zc, m, e, True)
    zc[m] = 0
    zero = np.uint64(0)
    one = np.uint64(1)
    if idx.size:  # sparse: copy the base, visit only the changed elements
        out[:] = base
        cur = _sparse_cursors(idx, base)
        for i in idx:
            b = np.uint64(base[i])
            c = _context(b, e)
            p = cur[c]
            cur[c] = p + one
            v = np.uint64(zc[p])
            out[i] = b + ((v >> one) ^ (zero - (v & one)))
        return
    # 3. into element order: each changed element takes its context's next value (an unchanged one
    # reads a value it then masks out), then the zigzag is undone and the base added (vectorised)
    _contexts(base, ctx)
    _lane_walk(bits, ctx, _context_cursors(bits, ctx), zc, out, True)
    for i in range(base.size):
        v = np.uint64(out[i])
        out[i] = np.uint64(base[i]) + ((v >> one) ^ (zero - (v & one)))


@njit(cache=True, nogil=True, inline="always")
def _slot4(k, j0, j1, j2, j3):
    """(plane-order position for class ``k``, the four class cursors after taking it); most frequent
    class first: classes come in runs, so the CPU predicts these branches well."""
    one = np.uint64(1)
    if k == 2:
        return j2, j0, j1, j2 + one, j3
    if k == 1:
        return j1, j0, j1 + one, j2, j3
    if k == 3:
        return j3, j0, j1, j2, j3 + one
    return j0, j0 + one, j1, j2, j3


@njit(cache=True, nogil=True, inline="always")
def _slot2(k, i0, i1):
    """The same for two classes, by arithmetic: a select costs less than a mispredicted branch."""
    return np.uint64(i0 + (i1 - i0) * k), i0 + 1 - k, i1 + k


@njit(cache=True, nogil=True)
def _class_walk(cls, s, a, b, m, e, gather):
    """The stable counting sort by class between context order (``cls[p]`` is the class of position
    p) and plane order (class-major): ``gather`` undoes it, ``b[p] = a[plane position of p]``, else it
    sorts, ``b[plane position of p] = a[p]``. The cursors live in registers (a cursor table costs a
    store-to-load chain per element)."""
    if e == 4:
        j0, j1, j2, j3 = np.uint64(s[0]), np.uint64(s[1]), np.uint64(s[2]), np.uint64(s[3])
        for p in range(m):
            j, j0, j1, j2, j3 = _slot4(cls[p], j0, j1, j2, j3)
            if gather:
                b[p] = a[j]
            else:
                b[j] = a[p]
    elif e == 2:
        i0, i1 = np.int64(s[0]), np.int64(s[1])
        for p in range(m):
            j, i0, i1 = _slot2(np.int64(cls[p]), i0, i1)
            if gather:
                b[p] = a[j]
            else:
                b[j] = a[p]
    else:
        cur = s[:e].astype(np.uint64)
        for p in range(m):
            k = cls[p]
            if gather:
                b[p] = a[cur[k]]
            else:
                b[cur[k]] = a[p]
            cur[k] += 1


@njit(cache=True, nogil=True)
def split(z, bits, idx, base, m):
    """Encoder, the inverse of :func:`decode`: (classes in context order, count per class, planes) of
    the ``m`` changed elements of ``z`` (zigzagged deltas; ``bits`` 1 where z != 0; ``idx`` their
    indices when few changed, then only they are visited, else empty)."""
    e = base.itemsize
    zc = np.zeros(m + 1, z.dtype)
    if idx.size:
        cur = _sparse_cursors(idx, base)
        for i in idx:
            c = _context(np.uint64(base[i]), e)
            zc[cur[c]] = z[i]
            cur[c] += np.uint64(1)
    else:
        ctx = np.empty(base.size, np.uint8)
        _contexts(base, ctx)
        _lane_walk(bits, ctx, _context_cursors(bits, ctx), z, zc, False)
    cls = np.empty(m, np.uint8)
    for p in range(m):
        v = np.uint64(zc[p])
        k = np.uint8(0)
        for q in range(1, e):
            k += np.uint8(v > np.uint64((1 << (8 * q)) - 1))
        cls[p] = k
    counts = _class_counts(cls, m)
    s = _class_starts(counts, e)
    if counts[: e].max() == m:  # a single class: plane order is context order
        zp = zc
    else:
        zp = np.empty(m, z.dtype)
        _class_walk(cls, s, zc, zp, m, e, False)
    size = 0
    for q in range(e):
        size += m - s[q]
    planes = np.empty(size, np.uint8)
    off = 0
    for q in range(e):
        n = m - s[q]
        src = zp[s[q] : m]
        dst = planes[off : off + n]
        sh = np.uint64(8 * q)
        for j in range(n):
            dst[j] = np.uint8((np.uint64(src[j]) >> sh) & np.uint64(0xFF))
        off += n
    return cls, counts[:e], planes
