"""Rewrite a range of history with libgit2 (pygit2): new blobs for selected files, new trees and commits,
refs moved in one ``git update-ref --stdin`` transaction.

Blobs and trees are converted once (memoised by id and path), so a history of N commits costs the
distinct files it holds, not N full trees. A commit whose tree and parents come out unchanged keeps
its id, which is what makes a second run a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from ..errors import UsageError
from ..git.repo import git, run_git

# (path, blob id) -> new blob id, or None to keep the blob
BlobFn = Callable[[str, pygit2.Oid], "pygit2.Oid | None"]
# (old .gitattributes text or None, patterns hit in this commit's tree) -> new text or None to keep
AttrsFn = Callable[["str | None", set[str]], "str | None"]
# path -> the pattern that selects it (for AttrsFn), or None
HitFn = Callable[[str], "str | None"]

_BLOB_MODES = (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE)


@dataclass
class Selection:
    """The commits to rewrite (parents first) and the refs to move afterwards."""

    commits: list[str]
    refs: dict[str, str]  # refname -> the commit (or tag object) it points at now


@dataclass
class Rewriter:
    repo: pygit2.Repository
    blob_fn: BlobFn
    attrs_fn: AttrsFn
    hit_fn: HitFn
    commit_map: dict[str, str] = field(default_factory=dict)
    _trees: dict[tuple[str, str], tuple[pygit2.Oid, frozenset[str]]] = field(default_factory=dict)

    def tree(self, oid: pygit2.Oid, prefix: str = "") -> tuple[pygit2.Oid, frozenset[str]]:
        """The converted tree ``oid`` found at ``prefix``, and the include patterns its files hit."""
        key = (str(oid), prefix)
        if key in self._trees:
            return self._trees[key]
        tree = self.repo[oid]
        tb = self.repo.TreeBuilder()
        hits: set[str] = set()
        changed = False
        attrs_entry = None
        for entry in tree:
            path = prefix + entry.name
            new = entry.id
            if entry.filemode == pygit2.GIT_FILEMODE_TREE:
                new, sub = self.tree(entry.id, path + "/")
                hits |= sub
            elif entry.filemode in _BLOB_MODES:
                if not prefix and entry.name == ".gitattributes":
                    attrs_entry = entry
                    continue
                converted = self.blob_fn(path, entry.id)
                if converted is not None:
                    new = converted
                    if (pat := self.hit_fn(path)) is not None:
                        hits.add(pat)
            if new != entry.id:
                changed = True
            tb.insert(entry.name, new, entry.filemode)
        if not prefix:
            old_text = self.repo[attrs_entry.id].data.decode("utf-8", "surrogateescape") if attrs_entry else None
            new_text = self.attrs_fn(old_text, hits)
            if new_text is not None and new_text != old_text:
                changed = True
                if new_text:
                    oid_attrs = self.repo.create_blob(new_text.encode("utf-8", "surrogateescape"))
                    tb.insert(".gitattributes", oid_attrs, attrs_entry.filemode if attrs_entry else pygit2.GIT_FILEMODE_BLOB)
            elif attrs_entry is not None:
                tb.insert(".gitattributes", attrs_entry.id, attrs_entry.filemode)
        result = (tb.write() if changed else oid), frozenset(hits)
        self._trees[key] = result
        return result

    def commit(self, sha: str) -> str:
        """Rewrite one commit whose parents were rewritten already (or lie outside the range)."""
        c = self.repo[sha]
        parents = [pygit2.Oid(hex=self.commit_map.get(str(p), str(p))) for p in c.parent_ids]
        tree, _ = self.tree(c.tree_id)
        if tree == c.tree_id and parents == list(c.parent_ids):
            new = sha
        else:
            args = [c.message_encoding] if c.message_encoding else []
            new = str(self.repo.create_commit(None, c.author, c.committer, c.raw_message, tree, parents, *args))
        self.commit_map[sha] = new
        return new


def select(cwd: Path, revs: list[str], everything: bool) -> Selection:
    """The commits of ``revs`` (git rev-list syntax; default: the current branch) or of every local ref."""
    refs: dict[str, str] = {}
    if everything:
        if revs:
            raise UsageError("give either --everything or revisions, not both")
        out = git("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags", cwd=cwd)
        for line in out.splitlines():
            name, _, oid = line.partition(" ")
            refs[name] = oid
        args = ["--branches", "--tags"]
    else:
        if not revs:
            head = git("symbolic-ref", "-q", "HEAD", cwd=cwd, check=False)
            if not head:
                raise UsageError("HEAD is detached; name a branch or use --everything")
            revs = [head]
        args = []
        for r in revs:
            args.append(r)
            for part in ([r.split("..", 1)[1]] if ".." in r else [] if r.startswith("^") else [r]):
                full = git("rev-parse", "--symbolic-full-name", part or "HEAD", cwd=cwd, check=False)
                if full.startswith(("refs/heads/", "refs/tags/")):
                    refs[full] = git("rev-parse", full, cwd=cwd)
    out = git("rev-list", "--topo-order", "--reverse", *args, "--", cwd=cwd)
    return Selection(out.split(), refs)


def new_ref_targets(repo: pygit2.Repository, cwd: Path, refs: dict[str, str], commit_map: dict[str, str]) -> dict[str, str]:
    """Where each ref goes: a branch to its new commit, an annotated tag to a new tag object (same text)."""
    out: dict[str, str] = {}
    for name, oid in refs.items():
        obj = repo[oid]
        if obj.type == pygit2.GIT_OBJECT_TAG:
            target = str(obj.target)
            if commit_map.get(target, target) == target:
                continue
            raw = repo.odb.read(obj.id)[1]
            raw = raw.replace(f"object {target}\n".encode(), f"object {commit_map[target]}\n".encode(), 1)
            # git validates the tag text (mktag-like checks) as it writes it
            new = git("hash-object", "-t", "tag", "-w", "--stdin", cwd=cwd, input=raw)
            out[name] = new
        elif commit_map.get(oid, oid) != oid:
            out[name] = commit_map[oid]
    return out


def update_refs(cwd: Path, moves: dict[str, str], old: dict[str, str], message: str) -> None:
    """Move every ref in one transaction, each checked against its old value."""
    if not moves:
        return
    lines = "".join(f"update {name} {new} {old[name]}\n" for name, new in moves.items())
    proc = run_git(["update-ref", "-m", message, "--stdin"], cwd, input=lines.encode())
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"could not move the refs ({msg[-1] if msg else proc.returncode}); nothing was changed")


def require_clean(cwd: Path) -> None:
    """Refuse to rewrite under uncommitted changes: they would be lost or mixed into the new history."""
    out = git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    if out.strip():
        raise UsageError("the work tree has uncommitted changes; commit or stash them before migrating")


def checked_out_branch(cwd: Path) -> str:
    return git("symbolic-ref", "-q", "HEAD", cwd=cwd, check=False)


def write_map(path: Path, pairs: Iterable[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs))
