"""textconv (``diff.coral.textconv``): a model file as stable text, one line per tensor.

``git log -p``, ``git show`` and GUIs diff this text, so a changed tensor shows as one changed
line. The content id is derived from chunk ids (hashing only); statistics are computed in float64.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

from ..core import pointer as ptr
from ..core.mapped import mapped_array
from ..errors import CoralError
from ..ui import human_bytes
from .tensordiff import BufferSource, Source, content_id, hash_pointer, value_stats, views


def _f(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "nan"
    return format(x, ".4g")


def lines_for(p: ptr.Pointer, src: Source | None, *, stats: bool = True, workers: int = 2) -> list[str]:
    """The textconv lines of the file pointer ``p`` names (``src`` serves its chunks)."""
    if p.format == "opaque" or not p.tensors:
        return [f"coral {p.format} file: {p.size} bytes ({human_bytes(p.size)}), id {p.file_id[:12]}"]
    vs = views(p, src)
    meta = ",".join(p.skeleton)
    import xxhash

    out = [
        f"coral {p.format} file: {len(vs)} tensors, {p.size} bytes ({human_bytes(p.size)}), "
        f"metadata id {xxhash.xxh3_64_hexdigest(meta.encode())[:12]}"
    ]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for name, v in vs.items():
            shape = "[" + ",".join(map(str, v.shape)) + "]"
            line = f"{name} {v.dtype} {shape} id={content_id(v)}"
            if stats and src is not None:
                st = value_stats(v, src, pool, 2 * workers)
                if st is not None and not v.numel:
                    line += " empty"
                elif st is not None:
                    line += f" mean={_f(st.mean)} std={_f(st.std)} min={_f(st.lo if st.n else None)} max={_f(st.hi if st.n else None)}"
                    if st.nonfinite:
                        line += f" nonfinite={st.nonfinite}"
            out.append(line)
    return out


def textconv(path: str, *, chunk_bytes: int, store: Source | None = None, stats: bool = True, workers: int = 2) -> str:
    """Text for the file at ``path`` (working-tree form, as git passes it)."""
    with mapped_array(path) as buf:
        p, src = hash_pointer(memoryview(buf), chunk_bytes, workers=workers)
        if isinstance(src, BufferSource):
            src.fallback = store  # a pointer file (e.g. chunks not fetched) is read from the store
        text = "\n".join(lines_for(p, src, stats=stats, workers=workers)) + "\n"
        del src
    return text


def run(path: str) -> int:
    """Entry point of ``git-coral textconv PATH``: print the text on stdout."""
    import sys

    from ..git.repo import find_repo

    try:
        repo = find_repo()
        chunk_bytes, store, workers = repo.chunk_bytes, repo.store, repo.workers
        stats = os.environ.get("CORAL_TEXTCONV_STATS", repo.config.get("coral.textconvstats", "true")).lower() not in ("0", "false", "no", "off")
    except CoralError:
        from ..core.chunking import DEFAULT_CHUNK_BYTES

        chunk_bytes, store, workers, stats = DEFAULT_CHUNK_BYTES, None, 2, True
    sys.stdout.write(textconv(path, chunk_bytes=chunk_bytes, store=store, stats=stats, workers=workers))
    sys.stdout.flush()
    return 0
