"""git coral stats: every figure checked against sizes computed independently from git and the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import coral, git, make_state, perturb, save_safetensors, sha256

from coral_git.core import pointer as ptr
from coral_git.git.repo import find_repo
from coral_git.maintenance.stats import stats


def build(repo: Path) -> dict[tuple[str, str], int]:
    """a: three versions; b: a copy of a's first version. Returns {(path, sha256): size}."""
    s0 = make_state(0, layers=2, width=96)
    s1, s2 = perturb(s0, 1), perturb(perturb(s0, 1), 2)
    versions: dict[tuple[str, str], int] = {}

    def put(name: str, state: dict) -> None:
        save_safetensors(repo / name, state)
        versions[(name, sha256(repo / name))] = (repo / name).stat().st_size
        git(repo, "add", name)

    put("a.safetensors", s0)
    git(repo, "commit", "-qm", "c1")
    put("a.safetensors", s1)
    put("b.safetensors", s0)
    git(repo, "commit", "-qm", "c2")
    put("a.safetensors", s2)
    git(repo, "commit", "-qm", "c3")
    return versions


def pointers(repo: Path) -> list[ptr.Pointer]:
    out = []
    for rev in git(repo, "rev-list", "--all").split():
        for line in git(repo, "ls-tree", "-r", rev).splitlines():
            meta, path = line.split("\t")
            if path.endswith(".safetensors"):
                out.append(ptr.parse(git(repo, "cat-file", "blob", meta.split()[2]).encode()))
    return out


def test_figures_match_independent_sums(repo: Path) -> None:
    versions = build(repo)
    r = find_repo(repo)
    s = stats(r)
    assert s.logical_bytes == sum(versions.values())
    unique: dict[str, int] = {}
    for (_, digest), size in versions.items():
        unique[digest] = size
    assert s.lfs_bytes == sum(unique.values()) < s.logical_bytes
    assert (s.files, s.file_versions, s.unique_files) == (2, 4, 3)
    chunks = set().union(*(p.chunk_ids() for p in pointers(repo)))
    assert s.chunks == len(chunks)
    assert s.unique_chunk_bytes == sum(r.store.get(c).size for c in chunks)
    objects = r.store_root / "objects"
    on_disk = [Path(d) / f for d, _, fs in os.walk(objects) for f in fs]
    assert s.disk_files == len(on_disk) == s.objects
    assert s.stored_bytes == s.disk_bytes == sum(f.stat().st_size for f in on_disk)
    assert s.dedup_saved + s.delta_saved + s.compression_saved == s.logical_bytes - s.stored_bytes
    assert s.dedup_saved >= s.logical_bytes - s.lfs_bytes  # b is a copy: all its chunks dedup
    assert s.deltas > 0 and s.delta_saved > 0

    def depth(c: str) -> int:
        d = 0
        while (c := r.store.header(c).base) is not None:
            d += 1
        return d

    assert s.longest_chain == max(depth(c) for c in chunks) >= 1
    assert round(s.ratio, 6) == round(s.logical_bytes / s.stored_bytes, 6)


def test_breakdowns_add_up(repo: Path) -> None:
    versions = build(repo)
    r = find_repo(repo)
    total = stats(r)
    by_file = {row.name: row for row in stats(r, by="file").rows}
    assert set(by_file) == {"a.safetensors", "b.safetensors"}
    assert by_file["a.safetensors"].versions == 3 and by_file["b.safetensors"].versions == 1
    assert by_file["b.safetensors"].new_chunks == 0  # b's content was stored as a's first version
    assert sum(x.logical_bytes for x in by_file.values()) == total.logical_bytes == sum(versions.values())
    assert sum(x.new_chunks for x in by_file.values()) == total.chunks
    assert sum(x.stored_bytes for x in by_file.values()) == total.stored_bytes
    by_commit = stats(r, by="commit").rows
    assert [row.subject for row in by_commit] == ["c1", "c2", "c3"]
    assert sum(x.logical_bytes for x in by_commit) == total.logical_bytes
    assert by_commit[1].versions == 2


def test_cli_json_and_text(repo: Path) -> None:
    build(repo)
    data = json.loads(coral(repo, "stats", "--json").stdout)
    s = stats(find_repo(repo))
    assert data["logical_bytes"] == s.logical_bytes and data["lfs_bytes"] == s.lfs_bytes
    assert data["ratio"] == round(s.ratio, 4)
    coral(repo, "gc")  # packs everything and re-chooses bases (newest versions keyframes): never more bytes here
    after = json.loads(coral(repo, "stats", "--json", "--by", "commit").stdout)
    assert after["stored_bytes"] <= s.stored_bytes and after["disk_files"] == 1 and after["packs"] == 1
    assert len(after["rows"]) == 3
    text = coral(repo, "stats", "--by", "file").stdout.decode()
    assert "git-lfs would store" in text and "a.safetensors" in text
    bad = coral(repo, "stats", "--by", "tensor", check=False)
    assert bad.returncode == 2 and len(bad.stderr.decode().strip().splitlines()) == 1
