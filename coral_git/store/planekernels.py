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
def _contexts(base):
    """Per element: the 8 bits below the sign of the base element (exponent of fp32/bf16), uint8."""
    ctx = np.empty(base.size, np.uint8)
    sh = np.uint64(8 * base.itemsize - 8)
    one = np.uint64(1)
    ff = np.uint64(0xFF)
    for i in range(base.size):
        ctx[i] = np.uint8(((np.uint64(base[i]) << one) >> sh) & ff)
    return ctx


@njit(cache=True, nogil=True)
def _context_cursors(bits, ctx):
    """Start, in context order, of each context's changed elements (``bits`` 1), as uint64."""
    h = np.zeros((256, 4), np.uint64)  # four counters per context: no store-to-load chain
    for i in range(ctx.size):
        h[np.uint64(ctx[i]), np.uint64(i & 3)] += np.uint64(bits[i])
    cur = np.zeros(256, np.uint64)
    acc = np.uint64(0)
    for c in range(256):
        cur[c] = acc
        acc += h[c, 0] + h[c, 1] + h[c, 2] + h[c, 3]
    return cur


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
def unpack_classes(packed, m, e):
    """(classes packed ``w = 1, 2, 4`` bits each for e = 2, 4, 8, first in the high bits, padded with
    room for a whole last byte; count per class 0..8, where [8] counts every class >= e)."""
    w = 1 if e == 2 else (2 if e == 4 else (4 if e == 8 else 0))
    cls = np.zeros(m + 8, np.uint8)
    if w:
        per = 8 // w
        msk = (1 << w) - 1
        for b in range((m + per - 1) // per):
            byte = packed[b]
            for t in range(per):
                k = (byte >> (8 - w * (t + 1))) & msk
                cls[b * per + t] = k if k < e else 8
    counts = _class_counts(cls, m)
    return cls, counts


@njit(cache=True, nogil=True)
def _class_starts(counts, e):
    s = np.zeros(e + 1, np.int64)
    for k in range(e):
        s[k + 1] = s[k] + counts[k]
    return s


@njit(cache=True, nogil=True)
def decode(bits, idx, cls, s, planes, base, out):
    """``out = base + unzigzag(z)`` (wrapping) for the changed elements (``bits`` 1), else ``base``.
    ``idx``: the changed elements' indices when few changed (then only they are visited), else empty.
    ``cls``: classes in context order; ``s``: class starts; ``planes``: plane k's bytes (leading then
    trailing, positions s_k ... m-1) back to back."""
    e = base.itemsize
    m = s[e]
    # 1. z in plane order (class-major): plane k gives byte k of positions s_k ... m-1
    zp = np.empty(m + 1, base.dtype)
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
    # 2. into context order: the stable sort by class undone
    zc = np.empty(m + 1, base.dtype)
    zc[m] = 0
    _by_class(cls, s, zp, zc, m, e, False)
    zero = np.uint64(0)
    one = np.uint64(1)
    if idx.size:  # sparse: copy the base, visit only the changed elements
        out[:] = base
        sh = np.uint64(8 * e - 8)
        ff = np.uint64(0xFF)
        h = np.zeros(257, np.uint64)
        for i in idx:
            h[((np.uint64(base[i]) << one) >> sh) & ff] += one
        acc = np.uint64(0)
        for c in range(257):
            acc, h[c] = acc + h[c], acc
        for i in idx:
            b = np.uint64(base[i])
            c = ((b << one) >> sh) & ff
            p = h[c]
            h[c] = p + one
            v = np.uint64(zc[p])
            out[i] = b + ((v >> one) ^ (zero - (v & one)))
        return
    # 3. into element order: each changed element takes its context's next value (an unchanged one
    # reads a value it then masks out), then the zigzag is undone and the base added (vectorised)
    ctx = _contexts(base)
    cur1 = _context_cursors(bits, ctx)
    for i in range(base.size):
        bit = np.uint64(bits[i])
        c = np.uint64(ctx[i])
        p = cur1[c]
        cur1[c] = p + bit
        out[i] = np.uint64(zc[p]) & (zero - bit)
    for i in range(base.size):
        v = np.uint64(out[i])
        out[i] = np.uint64(base[i]) + ((v >> one) ^ (zero - (v & one)))


@njit(cache=True, nogil=True)
def _by_class(cls, s, a, b, m, e, forward):
    """The stable counting sort by class between context order (``cls[p]`` is the class of position
    p) and plane order (class-major): ``forward`` moves ``a`` (context order) to ``b`` (plane order),
    else ``b[p] = a[position of p in plane order]``. Classes come in runs, so the cursors live in
    registers behind a branch the CPU predicts well (~2.5x faster than a cursor table)."""
    one = np.uint64(1)
    if e == 4:
        j0 = np.uint64(s[0])
        j1 = np.uint64(s[1])
        j2 = np.uint64(s[2])
        j3 = np.uint64(s[3])
        for p in range(m):
            k = cls[p]
            if k == 2:
                j = j2
                j2 += one
            elif k == 1:
                j = j1
                j1 += one
            elif k == 3:
                j = j3
                j3 += one
            else:
                j = j0
                j0 += one
            if forward:
                b[j] = a[p]
            else:
                b[p] = a[j]
    elif e == 2:
        j0 = np.uint64(s[0])
        j1 = np.uint64(s[1])
        for p in range(m):
            if cls[p]:
                j = j1
                j1 += one
            else:
                j = j0
                j0 += one
            if forward:
                b[j] = a[p]
            else:
                b[p] = a[j]
    else:
        cur = np.zeros(8, np.uint64)
        for k in range(e):
            cur[k] = s[k]
        for p in range(m):
            k = np.uint64(cls[p])
            j = cur[k]
            cur[k] = j + one
            if forward:
                b[j] = a[p]
            else:
                b[p] = a[j]


@njit(cache=True, nogil=True)
def split(z, bits, base, m):
    """Encoder, the inverse of :func:`decode`: (classes in context order, count per class, planes) of
    the ``m`` changed elements of ``z`` (zigzagged deltas; ``bits`` 1 where z != 0)."""
    e = base.itemsize
    ctx = _contexts(base)
    cur1 = _context_cursors(bits, ctx)
    zc = np.zeros(m + 1, z.dtype)
    um = np.uint64(m)
    for i in range(z.size):
        bit = np.uint64(bits[i])
        c = np.uint64(ctx[i])
        p = cur1[c]
        cur1[c] = p + bit
        zc[p if bit else um] = z[i]  # an unchanged element writes to the spare slot m
    cls = np.zeros(m, np.uint8)
    for p in range(m):
        v = np.uint64(zc[p])
        k = 0
        for q in range(1, e):
            k += (v >> np.uint64(8 * q)) != 0
        cls[p] = k
    counts = _class_counts(cls, m)
    s = _class_starts(counts, e)
    zp = np.empty(m, z.dtype)
    _by_class(cls, s, zc, zp, m, e, True)
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
