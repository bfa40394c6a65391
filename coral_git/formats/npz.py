"""NumPy ``.npz``: a zip of ``.npy`` members (``np.savez`` stores them, ``np.savez_compressed`` deflates).

The zip structure is read with the torch-zip reader's helpers. A stored member holding a valid
npy array becomes one span named like ``np.load``'s key (the member name without ``.npy``), with
its dtype and shape. A deflated member cannot be split into array bytes without re-deflating, so
its compressed bytes become one ``U8`` span named ``<key>.deflate``: the skeleton then no longer
shifts when an earlier array changes size, and unchanged arrays keep their chunks. Object arrays,
encrypted and other members stay in the skeleton; nothing is unpickled.
"""

from __future__ import annotations

from itertools import pairwise

from ..errors import FormatError
from . import npy
from .layout import Layout, TensorSpan
from .torchzip import _payload, _view, entries
from .torchzip import probe as zip_probe

FORMAT = "npz"


def probe(buf: memoryview) -> bool:
    """True when the file starts with a zip local header whose member name ends in ``.npy``."""
    if not zip_probe(buf) or len(buf) < 30:
        return False
    nlen = int.from_bytes(buf[26:28], "little")
    return bytes(buf[30 : 30 + nlen]).endswith(b".npy")


def read(buf: memoryview | bytes) -> Layout:
    """One span per ``.npy`` member; raise FormatError if the zip or a member is malformed."""
    with _view(buf) as mv:
        ents = entries(mv)
        if not ents or not all(e.name.endswith(".npy") for e in ents):
            raise FormatError("not every zip member is an .npy array")
        spans: list[TensorSpan] = []
        names: set[str] = set()
        for e in ents:
            key = e.name[: -len(".npy")]
            if key in names:
                raise FormatError(f"duplicate npz member {e.name!r}")
            names.add(key)
            start = _payload(mv, e)
            if e.flags & 1 or e.csize == 0:
                continue
            if e.method == 8:
                spans.append(TensorSpan(f"{key}.deflate", "U8", (e.csize,), start, e.csize))
                continue
            if e.method != 0 or e.csize != e.usize:
                continue
            member = mv[start : start + e.csize]
            try:
                data_at, code, shape, nbytes = npy.parse_header(member)
            except FormatError:
                continue  # an object array or a damaged member: its bytes stay in the skeleton
            spans.append(TensorSpan(key, code, shape, start + data_at, nbytes))
        spans.sort(key=lambda s: (s.offset, s.end))
        for a, b in pairwise(spans):
            if b.offset < a.end:
                raise FormatError(f"npz members {a.name!r} and {b.name!r} overlap")
        return Layout(FORMAT, len(mv), tuple(spans))
