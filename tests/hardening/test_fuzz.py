"""Fuzz every format reader through the real clean → pointer text → smudge path.

Each input either round-trips byte-exact against a real ``ChunkStore`` or is refused with a
``CoralError``; anything else (another exception, a pointer that does not re-parse, a reader that
hit ``MemoryError``, a slow input) is a failure. The fuzzers run in a child process under
``RLIMIT_AS`` (no unbounded allocation can succeed) and a wall-clock limit (no hang), in an empty
directory that is checked afterwards: nothing may be written outside the store (no zip entry name
is ever extracted).

Targets: ``safetensors`` (length field, JSON header, offsets, dtypes, bytes), ``zip`` (central
directory, local headers, EOCD, entry names incl. path traversal, compression, records of real
``torch.save`` files), ``pickle`` (mutated ``data.pkl`` inside real torch zips with a valid CRC, and
legacy raw pickles), ``pickle-reader`` (the symbolic reader alone, hostile opcodes with 2^60 lengths).

``CORAL_FUZZ_EXAMPLES`` sets inputs per target (default small enough for CI); run longer by hand
with ``python benchmarks/bench_hardening.py``. The child can be run directly:
``python tests/test_hardening_fuzz.py TARGET --examples N --seeds DIR --work DIR [--random]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

TARGETS = ("safetensors", "zip", "pickle", "pickle-reader")
DEFAULT_EXAMPLES = 150
AS_LIMIT = 1 << 30  # 1 GiB of address space for the child
PER_INPUT_SECONDS = 20
MAX_RSS_MB = 400
ESCAPE = "coral-escaped"  # zip entry names point here; no file of this name may ever appear

# ---------------------------------------------------------------------------------------------
# seeds: real files written by the libraries users use (made in the parent, torch is optional)


def write_seeds(dest: Path) -> list[Path]:
    """Real safetensors and ``torch.save`` files to mutate; torch seeds only when torch is installed."""
    import numpy as np
    from safetensors.numpy import save_file

    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = []
    st = {
        "w": rng.standard_normal((16, 24)).astype(np.float32),
        "b": np.arange(8, dtype=np.int64).reshape(1, 8),
        "e": np.zeros((0, 3), np.float16),
        "s": np.array(2.5, np.float64),
    }
    save_file(st, str(dest / "a.safetensors"), metadata={"k": "v"})
    out.append(dest / "a.safetensors")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed for the tests
        return out
    g = torch.Generator().manual_seed(3)
    base = torch.randn(12, 20, generator=g)
    states = {
        "plain": {"w": base, "b": torch.zeros(20), "i": torch.arange(5)},
        "views": {"w": base, "t": base.t(), "row": base[3], "half": torch.ones(6, dtype=torch.float16)},
        "nested": {"model": {"l.0": torch.randn(8, 8, generator=g)}, "step": 3, "lr": [0.1, 0.01], "name": "x"},
        "bf16": {"x": torch.randn(4, 4, generator=g).to(torch.bfloat16), "m": torch.tensor([True, False])},
    }
    for name, state in states.items():
        p = dest / f"{name}.pt"
        torch.save(state, p)
        out.append(p)
    return out


# ---------------------------------------------------------------------------------------------
# the check every input goes through


class Harness:
    """A real store under ``work/store``; ``check(data)`` returns the outcome or raises AssertionError."""

    def __init__(self, work: Path) -> None:
        from coral_git.store.chunkstore import ChunkStore

        self.store = ChunkStore(work / "store")
        self.outcomes: Counter[str] = Counter()
        self.slowest = 0.0

    def check(self, data: bytes) -> str:
        from coral_git.core import pointer as ptr
        from coral_git.errors import CoralError
        from coral_git.filter.clean import clean
        from coral_git.filter.smudge import smudge

        t0 = time.perf_counter()
        signal.alarm(PER_INPUT_SECONDS)
        try:
            try:
                res = clean(data, self.store, chunk_bytes=4096, workers=1)
            except CoralError:
                outcome = "refused"
            else:
                note = res.note or ""
                assert "MemoryError" not in note, f"a reader tried a huge allocation: {note}"
                text = res.pointer.encode()
                p = ptr.parse(text)  # the pointer git stores must parse back to the same thing
                assert p == res.pointer
                assert clean(text, self.store, chunk_bytes=4096).pointer == p  # clean(pointer) == pointer
                out = bytearray()
                smudge(p, self.store, out.extend, workers=1)
                assert bytes(out) == bytes(data), "smudge(clean(x)) != x"
                outcome = p.format + (" (fallback)" if res.note else "")
        finally:
            signal.alarm(0)
        self.slowest = max(self.slowest, time.perf_counter() - t0)
        self.outcomes[outcome] += 1
        return outcome


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError(f"one input took more than {PER_INPUT_SECONDS} s")


# ---------------------------------------------------------------------------------------------
# strategies (hypothesis is imported lazily so that the module imports fast for pytest collection)

INTERESTING_U64 = [0, 1, 2, 7, 8, 9, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 1 << 40, 1 << 60, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


def _st_file(seed: bytes) -> tuple[int, dict, bytes]:
    (n,) = struct.unpack_from("<Q", seed)
    return n, json.loads(seed[8 : 8 + n]), seed[8 + n :]


def safetensors_inputs(seeds: list[bytes]):
    from hypothesis import strategies as st

    hostile_int = st.sampled_from(INTERESTING_U64) | st.integers(-(1 << 70), 1 << 70) | st.sampled_from([-1, -(1 << 63)])
    hostile_value = (
        hostile_int
        | st.booleans()
        | st.none()
        | st.floats()
        | st.text(max_size=12)
        | st.lists(hostile_int | st.booleans() | st.floats(), max_size=6)
        | st.dictionaries(st.text(max_size=4), hostile_int, max_size=2)
    )
    dtypes = st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F4", "F6_E2M3", "C64", "f32", "", "F8_E4M3", "Q", "I8"]) | st.text(max_size=8)
    names = st.text(max_size=16) | st.sampled_from(["__metadata__", "", " ", "a b", "x\ny", "%41", "\ud800", "../../" + ESCAPE, "ü" * 40])

    @st.composite
    def from_seed(draw):
        seed = draw(st.sampled_from(seeds))
        n, header, data = _st_file(seed)
        kind = draw(st.sampled_from(["length", "field", "retype", "rename", "add", "bytes", "truncate", "data"]))
        if kind == "length":
            return struct.pack("<Q", draw(st.sampled_from([*INTERESTING_U64, n - 1, n + 1, n + len(data), n + len(data) + 1]) | st.integers(0, (1 << 64) - 1))) + seed[8:]
        if kind == "bytes":
            buf = bytearray(seed)
            for _ in range(draw(st.integers(1, 8))):
                pos = draw(st.integers(0, min(len(buf) - 1, 8 + n + 16)))
                buf[pos] = draw(st.integers(0, 255))
            return bytes(buf)
        if kind == "truncate":
            return seed[: draw(st.integers(0, len(seed) - 1))]
        if kind == "data":
            return seed + draw(st.binary(max_size=64)) if draw(st.booleans()) else seed[:-1] if data else seed
        keys = [k for k in header if k != "__metadata__"]
        if kind == "field" and keys:
            k = draw(st.sampled_from(keys))
            fld = draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
            if fld is None:
                header[k] = draw(hostile_value)
            elif fld == "dtype":
                header[k][fld] = draw(dtypes | hostile_value)
            else:
                header[k][fld] = draw(hostile_value)
        elif kind == "retype" and keys:
            # the same numbers in another JSON type: true for 1, false for 0, 1.0, "1", [1]
            k = draw(st.sampled_from(keys))
            fld = draw(st.sampled_from(["shape", "data_offsets"]))
            vals = list(header[k][fld])
            if vals:
                i = draw(st.integers(0, len(vals) - 1))
                v = vals[i]
                vals[i] = draw(st.sampled_from([v == 1 if v in (0, 1) else v, float(v), str(v), [v], None]))
            else:
                vals = [draw(st.sampled_from([True, 1.0, "1", []]))]
            header[k][fld] = vals
        elif kind == "rename" and keys:
            k = draw(st.sampled_from(keys))
            header[draw(names)] = header.pop(k)
        elif kind == "add":
            header[draw(names)] = {"dtype": draw(dtypes), "shape": draw(st.lists(hostile_int, max_size=4)), "data_offsets": draw(st.lists(hostile_int, max_size=3))}
        text = json.dumps(header, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        text += b" " * draw(st.integers(0, 9))
        return struct.pack("<Q", len(text)) + text + data

    @st.composite
    def wellformed(draw):
        """Valid files with random tensors: these must be read as safetensors, not opaque."""
        header, blobs, pos = {}, [], 0
        for i in range(draw(st.integers(0, 5))):
            dt, size = draw(st.sampled_from([("F32", 4), ("F16", 2), ("U8", 1), ("I64", 8), ("C128", 16)]))
            shape = draw(st.lists(st.integers(0, 9), max_size=3))
            nb = size
            for d in shape:
                nb *= d
            blob = draw(st.binary(min_size=nb, max_size=nb)) if nb < 512 else bytes(range(256)) * (nb // 256) + bytes(nb % 256)
            header[draw(names.filter(lambda s: s != "__metadata__")) + f"#{i}"] = {"dtype": dt, "shape": shape, "data_offsets": [pos, pos + nb]}
            blobs.append(blob)
            pos += nb
        text = json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return struct.pack("<Q", len(text)) + text + b"".join(blobs)

    return from_seed() | wellformed()


# -- zip -------------------------------------------------------------------------------------

CD_FIELDS = [(0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (34, 2), (42, 4)]
LOCAL_FIELDS = [(0, 4), (6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)]
EOCD_FIELDS = [(0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)]


def zip_structure(buf: bytes) -> list[tuple[int, int]]:
    """Absolute ``(offset, width)`` of every header field worth mutating in a zip file."""
    out: list[tuple[int, int]] = []
    eocd = buf.rfind(b"PK\x05\x06")
    if eocd < 0 or eocd + 22 > len(buf):
        return out
    out += [(eocd + o, w) for o, w in EOCD_FIELDS]
    count, _, cd = struct.unpack_from("<HLL", buf, eocd + 10)
    loc64 = eocd - 20
    if loc64 >= 0 and buf[loc64 : loc64 + 4] == b"PK\x06\x07":
        (rec,) = struct.unpack_from("<Q", buf, loc64 + 8)
        out += [(loc64 + 8, 8)]
        if rec + 56 <= len(buf):
            out += [(rec + o, 8) for o in (24, 32, 40, 48)]
            (cd,) = struct.unpack_from("<Q", buf, rec + 48)
            (count,) = struct.unpack_from("<Q", buf, rec + 32)
    pos = cd
    for _ in range(min(count, 64)):
        if pos + 46 > len(buf) or buf[pos : pos + 4] != b"PK\x01\x02":
            break
        out += [(pos + o, w) for o, w in CD_FIELDS]
        nlen, xlen, clen = struct.unpack_from("<3H", buf, pos + 28)
        (lho,) = struct.unpack_from("<L", buf, pos + 42)
        if lho + 30 <= len(buf) and buf[lho : lho + 4] == b"PK\x03\x04":
            out += [(lho + o, w) for o, w in LOCAL_FIELDS]
        # the zip64 extra field's 8-byte values, if any
        x = pos + 46 + nlen
        end = x + xlen
        while x + 4 <= end:
            tag, size = struct.unpack_from("<HH", buf, x)
            if tag == 1:
                out += [(x + 4 + 8 * i, 8) for i in range(size // 8)]
            x += 4 + size
        pos += 46 + nlen + xlen + clen
    return [(o, w) for o, w in out if o + w <= len(buf)]


def rebuild_zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    """A zip written by Python's zipfile from ``(name, data, method)``; names are kept verbatim."""
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        for name, data, method in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = method
            z.writestr(info, data)
    return bio.getvalue()


def seed_entries(seed: bytes) -> list[tuple[str, bytes, int]]:
    with zipfile.ZipFile(io.BytesIO(seed)) as z:
        return [(i.filename, z.read(i), i.compress_type) for i in z.infolist()]


HOSTILE_PREFIXES = ["../../" + ESCAPE + "/", "/tmp/" + ESCAPE + "/", "..\\..\\" + ESCAPE + "\\", "a/../../" + ESCAPE + "/", ESCAPE + "/../../", "", "./", "x" * 300 + "/", "\u00e9t\u00e9/"]


def zip_inputs(seeds: list[bytes]):
    from hypothesis import strategies as st

    @st.composite
    def fields(draw):
        buf = bytearray(draw(st.sampled_from(seeds)))
        spots = zip_structure(bytes(buf))
        for _ in range(draw(st.integers(1, 4))):
            off, w = draw(st.sampled_from(spots))
            (old,) = struct.unpack_from({2: "<H", 4: "<L", 8: "<Q"}[w], buf, off)
            top = (1 << (8 * w)) - 1
            val = draw(st.sampled_from([0, 1, top, top - 1, 1 << (8 * w - 1), (old + 1) & top, (old - 1) & top, len(buf) & top, (1 << 60) & top]) | st.integers(0, top))
            buf[off : off + w] = val.to_bytes(w, "little")
        return bytes(buf)

    @st.composite
    def rebuilt(draw):
        ents = seed_entries(draw(st.sampled_from(seeds)))
        prefix = ents[0][0].split("/", 1)[0] + "/"
        new_prefix = draw(st.sampled_from(HOSTILE_PREFIXES)) + draw(st.sampled_from(["archive/", prefix, ""]))
        out = []
        for name, data, _ in ents:
            if draw(st.integers(0, 9)) == 0:
                continue  # drop a record
            nm = new_prefix + name[len(prefix) :] if draw(st.booleans()) else name
            if draw(st.integers(0, 5)) == 0:
                nm = draw(st.sampled_from(["../../" + ESCAPE, "/" + ESCAPE, nm + "\x00evil", nm.upper(), nm + "/"]))
            method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
            if "/data/" in nm and draw(st.integers(0, 4)) == 0:
                data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=8))
            out.append((nm, data, method))
            if draw(st.integers(0, 12)) == 0:
                out.append((nm, data, method))  # a duplicate entry
        return rebuild_zip(out)

    @st.composite
    def raw_bytes(draw):
        buf = bytearray(draw(st.sampled_from(seeds)))
        kind = draw(st.sampled_from(["flip", "truncate", "append", "splice"]))
        if kind == "flip":
            for _ in range(draw(st.integers(1, 16))):
                buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del buf[draw(st.integers(4, len(buf) - 1)) :]
        elif kind == "append":
            buf += draw(st.binary(max_size=200)) + (b"PK\x05\x06" + bytes(18) if draw(st.booleans()) else b"")
        else:
            a = draw(st.integers(4, len(buf) - 1))
            b = draw(st.integers(a, len(buf)))
            buf[a:b] = draw(st.binary(max_size=64))
        return bytes(buf)

    return fields() | rebuilt() | raw_bytes()


# -- pickle ----------------------------------------------------------------------------------


def hostile_opcodes(marker: str) -> list[bytes]:
    """Opcode snippets with huge lengths, deep nesting and code-execution globals."""
    q = struct.pack
    return [
        b"\x8d" + q("<Q", 1 << 60),  # BINUNICODE8 claiming 2^60 bytes
        b"\x8e" + q("<Q", 1 << 60),  # BINBYTES8
        b"\x96" + q("<Q", 1 << 60),  # BYTEARRAY8
        b"\x95" + q("<Q", 1 << 60),  # FRAME
        b"T" + q("<i", 0x7FFFFFFF),  # BINSTRING
        b"X" + q("<I", 0xFFFFFFFF),  # BINUNICODE
        b"\x8b" + q("<i", 0x7FFFFFFF),  # LONG4
        b"j" + q("<I", 0xFFFFFFFF),  # LONG_BINGET
        b"r" + q("<I", 0xFFFFFFFF),  # LONG_BINPUT
        b"(" * 5000,  # MARK storm
        b"]" * 3000 + b"a" * 3000,  # deep list nesting
        b")" + b"\x85" * 3000,  # TUPLE1 nesting
        b"}" + b"(" + b"K\x01" * 1000 + b"u",  # SETITEMS, odd
        b"\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode() + b"\x85R",
        f"cbuiltins\neval\n(S'open({marker!r},\"w\")'\ntR".encode(),
        f"csubprocess\nPopen\n((S'touch'\nS'{marker}'\nltR".encode(),
        b"\x80\x05",
        b"N" * 1000 + b"0" * 1000,
        b"I99999999999999999999999999999\n",
        b"L" + b"9" * 5000 + b"L\n",
        b"F1e400\n",
        b"g99999\n",
        b"\x88\x89b",  # BUILD on a bool
        b"Q",  # BINPERSID on whatever is on the stack
        b"P0\n",  # PERSID
        b".",
    ]


def mutate_pickle(draw, data: bytes, marker: str) -> bytes:
    from hypothesis import strategies as st

    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "replace"]))
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            buf[pos:pos] = draw(st.sampled_from(hostile_opcodes(marker)) | st.binary(max_size=16))
        elif kind == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del buf[pos:]
        else:
            buf[pos : pos + 1] = draw(st.sampled_from([b"c", b"\x93", b"R", b"b", b"Q", b"h", b"j", b"\x94", b"e", b"u", b"s", b"t", b"0", b"2"]))
    return bytes(buf)


def pickle_inputs(seeds: list[bytes], marker: str):
    """Real torch zips whose data.pkl is mutated (CRC kept valid), plus legacy raw pickles."""
    from hypothesis import strategies as st

    @st.composite
    def in_zip(draw):
        ents = seed_entries(draw(st.sampled_from(seeds)))
        out = []
        for name, data, method in ents:
            if name.endswith("/data.pkl"):
                data = mutate_pickle(draw, data, marker)
            out.append((name, data, method))
        return rebuild_zip(out)

    @st.composite
    def legacy(draw):
        ents = seed_entries(draw(st.sampled_from(seeds)))
        pkl = next(d for n, d, _ in ents if n.endswith("/data.pkl"))
        return mutate_pickle(draw, pkl, marker)

    return in_zip() | legacy()


def pickle_reader_inputs(seeds: list[bytes], marker: str):
    from hypothesis import strategies as st

    @st.composite
    def one(draw):
        ents = seed_entries(draw(st.sampled_from(seeds)))
        pkl = next(d for n, d, _ in ents if n.endswith("/data.pkl"))
        return mutate_pickle(draw, pkl, marker)

    return one() | st.binary(max_size=256) | st.lists(st.sampled_from(hostile_opcodes(marker)), max_size=6).map(b"".join)


def check_pickle_reader(data: bytes, outcomes: Counter) -> None:
    """The symbolic reader alone: a tree or FormatError, never another exception or a call."""
    from coral_git.errors import FormatError
    from coral_git.formats.pickle_reader import find_tensors, parse_pickle

    signal.alarm(PER_INPUT_SECONDS)
    try:
        try:
            find_tensors(parse_pickle(data))
            outcomes["parsed"] += 1
        except FormatError:
            outcomes["refused"] += 1
    finally:
        signal.alarm(0)


# ---------------------------------------------------------------------------------------------
# the child process


def run_target(target: str, examples: int, seeds_dir: Path, work: Path, randomize: bool) -> dict:
    """Run ``examples`` inputs of ``target``; return counts. Raises on the first failing input."""
    from hypothesis import HealthCheck, Phase, given, settings

    signal.signal(signal.SIGALRM, _alarm)
    seeds = [p.read_bytes() for p in sorted(seeds_dir.iterdir())]
    st_seeds = [s for s in seeds if s[8:9] == b"{"]
    zip_seeds = [s for s in seeds if s[:4] == b"PK\x03\x04"]
    marker = str(work / "PWNED")
    harness = Harness(work)
    if target == "safetensors":
        strategy = safetensors_inputs(st_seeds)
    elif target == "zip":
        strategy = zip_inputs(zip_seeds)
    elif target == "pickle":
        strategy = pickle_inputs(zip_seeds, marker)
    elif target == "pickle-reader":
        strategy = pickle_reader_inputs(zip_seeds, marker)
    else:
        raise SystemExit(f"unknown target {target}")
    count = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not randomize,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(strategy)
    def fuzz(data: bytes) -> None:
        count["inputs"] += 1
        if target == "pickle-reader":
            check_pickle_reader(data, harness.outcomes)
        else:
            harness.check(data)
        assert not os.path.exists(marker), "a pickle was executed"

    t0 = time.perf_counter()
    # seeds themselves must be read as their format
    for s in st_seeds if target == "safetensors" else zip_seeds:
        if target != "pickle-reader":
            assert harness.check(s) in ("safetensors", "torch-zip"), "a seed fell back to opaque"
    fuzz()
    return {
        "target": target,
        "inputs": count["inputs"],
        "seconds": round(time.perf_counter() - t0, 2),
        "slowest_input_s": round(harness.slowest, 3),
        "outcomes": dict(harness.outcomes),
        "max_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> int:
    """This process's own peak resident memory. Not ``ru_maxrss``: on Linux it keeps the high-water mark
    of the process before ``exec``, i.e. the pytest parent's (which grows with every test it has run)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def run_child(target: str, examples: int, seeds_dir: Path, work: Path, randomize: bool = False, timeout: float = 600) -> dict:
    """Run one target in a child under RLIMIT_AS and a timeout; return its report (raise on failure)."""
    work.mkdir(parents=True, exist_ok=True)
    # hypothesis keeps a cache in its storage directory: outside the watched work dir
    env = {**os.environ, "TMPDIR": str(work / "tmp"), "HYPOTHESIS_STORAGE_DIRECTORY": str(work.parent / "hypothesis")}
    (work / "tmp").mkdir(exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), target, "--examples", str(examples), "--seeds", str(seeds_dir), "--work", str(work)]
    if randomize:
        cmd.append("--random")
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, timeout=timeout, preexec_fn=_limit_memory)
    if proc.returncode != 0:
        raise AssertionError(f"fuzz target {target} failed (exit {proc.returncode}):\n{proc.stderr.decode(errors='replace')[-6000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def examples_from_env() -> int:
    return int(os.environ.get("CORAL_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))


# ---------------------------------------------------------------------------------------------
# pytest


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("seeds")
    write_seeds(d)
    return d


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target(target: str, seeds: Path, tmp_path: Path) -> None:
    """Every fuzz input round-trips or is refused, in bounded memory and time, writing only the store."""
    work = tmp_path / "work"
    report = run_child(target, examples_from_env(), seeds, work)
    print(json.dumps(report))
    assert report["inputs"] >= min(examples_from_env(), 20)
    assert report["max_rss_mb"] < MAX_RSS_MB, report
    # nothing was extracted or written anywhere but the store
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if not str(p.relative_to(work)).startswith("store"))
    assert left == ["tmp"], left
    assert not any(ESCAPE in str(p) for p in tmp_path.parent.rglob("*")), "a zip entry name was written"
    assert not (work / "PWNED").exists()
    if target != "pickle-reader":
        from coral_git.store.chunkstore import ChunkStore

        store = ChunkStore(work / "store")
        ids = store.loose.ids()
        assert ids, "the fuzzer stored nothing"
        for cid in ids[:200]:
            assert store.get(cid).size >= 0  # every stored object decodes to its id
        tmps = [p for p in (work / "store").rglob(".tmp-*")]
        assert not tmps, tmps


def test_two_pow_60_lengths_are_refused_cheaply(tmp_path: Path) -> None:
    """Length fields claiming 2^60 bytes in each format are refused or fall back without allocating."""
    work = tmp_path / "work"
    work.mkdir()
    harness = Harness(work)
    header = b'{"a":{"dtype":"U8","shape":[1152921504606846976],"data_offsets":[0,1152921504606846976]}}'
    cases = [
        struct.pack("<Q", 1 << 60) + b"{}" + bytes(16),
        struct.pack("<Q", len(header)) + header + bytes(4),
        b"\x80\x04\x8d" + struct.pack("<Q", 1 << 60) + b"x",
    ]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for case in cases:
        assert harness.check(case) in ("opaque (fallback)", "opaque", "refused")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=TARGETS)
    ap.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES)
    ap.add_argument("--seeds", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--random", action="store_true", help="a fresh random seed instead of the fixed CI sequence")
    a = ap.parse_args()
    report = run_target(a.target, a.examples, a.seeds, a.work, a.random)
    print(json.dumps(report))


if __name__ == "__main__":
    main()


def test_pointer_parser_fuzz(tmp_path: Path) -> None:
    """Mutated pointer text (what a hand edit makes): parse() returns a canonical Pointer or PointerError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from coral_git.core import pointer as ptr
    from coral_git.errors import PointerError
    from coral_git.filter.clean import clean
    from coral_git.store.chunkstore import ChunkStore

    seeds = [(Path(__file__).parents[1] / "conftest.py").read_bytes()]
    store = ChunkStore(tmp_path / "store")
    header = b'{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b c/%":{"dtype":"U8","shape":[5000],"data_offsets":[24,5024]}}'
    st_file = struct.pack("<Q", len(header)) + header + bytes(range(256)) * 20
    texts = [clean(s, store, chunk_bytes=4096).pointer.encode() for s in [*seeds, st_file[: 8 + len(header) + 5024]]]
    pieces = [b"%ff", b"%", b"9" * 5000, b"-", b",", b" ", b"\n", b"[]", b"[,]", b"[1,,2]", b"\x80", b"tensor ", b"0" * 32, b"01"]

    @settings(max_examples=examples_from_env() * 4, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(texts), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.sampled_from(pieces) | st.binary(max_size=4)), max_size=4))
    def fuzz(text: bytes, edits: list[tuple[int, int, bytes]]) -> None:
        buf = bytearray(text)
        for pos, cut, piece in edits:
            pos %= len(buf) + 1
            buf[pos : pos + cut] = piece
        try:
            p = ptr.parse(bytes(buf))
        except PointerError:
            assert ptr.try_parse(bytes(buf)) is None  # parse_or_none raises like parse here
            return
        # what a reader relies on, checked here rather than trusted to parse():
        assert ptr.parse_or_none(bytes(buf)) == p == ptr.try_parse(bytes(buf))
        pos = 0
        for t in p.tensors:  # spans in order, inside the file, sizes that add up
            assert t.offset >= pos and t.nbytes >= 0
            pos = t.offset + t.nbytes
        assert pos <= p.size and p.skeleton_nbytes + sum(t.nbytes for t in p.tensors) == p.size
        assert all(len(c) == 32 and int(c, 16) >= 0 for c in p.chunk_ids())

    fuzz()
