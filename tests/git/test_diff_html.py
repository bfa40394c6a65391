"""git coral diff/log --html: a self-contained page, loaded in a real headless chromium (no network)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, make_state, new_repo, perturb, save_safetensors


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: this test needs the real browser (apt-get install chromium)")
    return exe


def browse(page: Path, tmp: Path, *mode: str) -> subprocess.CompletedProcess:
    """Headless chromium with everything that could reach the network switched off."""
    return subprocess.run(
        [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1200,900", *mode, page.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
        cwd=tmp,
    )


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (no image library needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    return w, h, zlib.decompress(idat)


def history(repo: Path) -> None:
    s = make_state(0, layers=3, width=64)
    save_safetensors(repo / "m.safetensors", s)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "epoch 0")
    for e in range(1, 5):
        s = perturb(s, e, scale=10.0**-e, keys=lambda k: not k.startswith("layers.0"))
        if e == 3:
            s["extra.scale"] = np.ones(7, np.float32)
            s["head.weight"] = s["head.weight"].astype(np.float16)
        save_safetensors(repo / "m.safetensors", s)
        git(repo, "commit", "-qam", f"epoch {e}")


def self_contained(text: str) -> None:
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page must not load anything"
    assert "@import" not in text and "url(" not in text


def test_diff_html_in_headless_chromium(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    history(repo)
    out = tmp_path / "diff.html"
    coral(repo, "diff", "HEAD~4", "HEAD", "--html", str(out))
    text = out.read_text()
    self_contained(text)
    dom = browse(out, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-500:]
    html = dom.stdout.decode()
    for name in ("layers.1.weight", "layers.2.bias", "head.weight", "extra.scale"):
        assert f'data-tensor="{name}"' in html, name
    assert 'data-tensor="layers.0.weight"' not in html  # unchanged tensors are not listed
    assert "F32 → F16" in html and ">retyped<" in html and ">added<" in html
    shot = tmp_path / "diff.png"
    proc = browse(out, tmp_path, f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.exists(), proc.stderr.decode(errors="replace")[-500:]
    w, h, pixels = png_pixels(shot)
    assert (w, h) == (1200, 900)
    assert len(set(pixels[: len(pixels) // 2])) > 20  # drawn: text, bars and colours, not a blank page


def test_log_html_heatmap(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    history(repo)
    out = tmp_path / "log.html"
    coral(repo, "log", "m.safetensors", "--html", str(out))
    self_contained(out.read_text())
    dom = browse(out, tmp_path, "--dump-dom")
    assert dom.returncode == 0
    html = dom.stdout.decode()
    for layer in ("layers.0", "layers.1", "layers.2", "head", "extra"):
        assert f'data-layer="{layer}"' in html, layer
    row0 = re.search(r'data-layer="layers.0".*?</tr>', html, re.S).group(0)
    assert row0.count('class="cell"') == 5  # one cell per commit
    assert row0.count("unchanged") == 4  # layers.0 only changed in its first commit
    shot = tmp_path / "log.png"
    assert browse(out, tmp_path, f"--screenshot={shot}").returncode == 0
    assert shot.stat().st_size > 5000
