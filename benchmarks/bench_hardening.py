"""Run the hardening checks longer than CI does and report counts.

    python benchmarks/bench_hardening.py                      # fuzz: 2000 random inputs per target
    python benchmarks/bench_hardening.py --examples 20000     # longer
    python benchmarks/bench_hardening.py --crash --crash-mb 200 --crash-points 0,0.1,0.2,0.4,0.6,0.8,1.0
    python benchmarks/bench_hardening.py --concurrency --conc-mb 128

Fuzzing uses the targets of tests/test_hardening_fuzz.py (each in a child under RLIMIT_AS with a
fresh random seed); a failing input is printed with hypothesis' minimal example and the script
exits 1. ``--crash`` and ``--concurrency`` run those test files with bigger sizes and more kill points.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def _fuzz_module():
    sys.path.insert(0, str(TESTS))
    spec = importlib.util.spec_from_file_location("test_hardening_fuzz", TESTS / "test_hardening_fuzz.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fuzz(examples: int, targets: list[str], deterministic: bool) -> bool:
    f = _fuzz_module()
    ok = True
    with tempfile.TemporaryDirectory(prefix="coral-fuzz-") as tmp:
        seeds = Path(tmp) / "seeds"
        f.write_seeds(seeds)
        print(f"{'target':<14} {'inputs':>7} {'seconds':>8} {'inputs/s':>9} {'slowest':>8} {'max RSS':>8}  outcomes")
        for t in targets:
            try:
                r = f.run_child(t, examples, seeds, Path(tmp) / t, randomize=not deterministic, timeout=24 * 3600)
            except AssertionError as exc:
                print(f"{t:<14} FAILED\n{exc}")
                ok = False
                continue
            rate = r["inputs"] / max(r["seconds"], 1e-9)
            print(
                f"{t:<14} {r['inputs']:>7} {r['seconds']:>8.1f} {rate:>9.0f} {r['slowest_input_s']:>7.3f}s {r['max_rss_mb']:>6} MB  "
                + json.dumps(r["outcomes"])
            )
    return ok


def run_tests(files: list[str], env: dict[str, str]) -> bool:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *files, "-q", "-s", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    for line in proc.stdout.splitlines():
        if "kill" in line or "passed" in line or "failed" in line or "Error" in line:
            print("  " + line)
    print(f"  ({time.monotonic() - t0:.0f} s, exit {proc.returncode})")
    if proc.returncode:
        print(proc.stdout[-4000:])
    return proc.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=2000, help="fuzz inputs per target")
    ap.add_argument("--targets", default="safetensors,zip,pickle,pickle-reader")
    ap.add_argument("--deterministic", action="store_true", help="the fixed CI input sequence instead of random")
    ap.add_argument("--no-fuzz", action="store_true")
    ap.add_argument("--crash", action="store_true", help="kill -9 tests with a bigger model and more kill points")
    ap.add_argument("--crash-mb", type=int, default=200)
    ap.add_argument("--crash-points", default="0,0.1,0.25,0.4,0.55,0.7,0.85,1.0")
    ap.add_argument("--gc-points", default="0.2,0.4,0.6,0.8,0.95")
    ap.add_argument("--concurrency", action="store_true", help="concurrency tests with bigger models")
    ap.add_argument("--conc-mb", type=int, default=128)
    a = ap.parse_args()
    ok = True
    if not a.no_fuzz:
        print(f"== fuzz: {a.examples} inputs per target")
        ok &= fuzz(a.examples, a.targets.split(","), a.deterministic)
    if a.crash:
        print(f"== crash: {a.crash_mb} MiB model, add kill points {a.crash_points}, gc/repack kill points {a.gc_points}")
        ok &= run_tests(
            ["tests/test_hardening_crash.py"],
            {"CORAL_CRASH_MB": str(a.crash_mb), "CORAL_CRASH_POINTS": a.crash_points, "CORAL_CRASH_GC_POINTS": a.gc_points},
        )
    if a.concurrency:
        print(f"== concurrency: {a.conc_mb} MiB models")
        ok &= run_tests(["tests/test_hardening_concurrency.py"], {"CORAL_CONC_MB": str(a.conc_mb)})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
