"""Checkpoint commits on a branch, written without touching the work tree or the index (torch-free).

A checkpoint is a commit whose message ends with git trailers (``Coral-Checkpoint: 1``,
``Coral-Epoch: 7``, ``Coral-Step: 700``, ``Coral-Metric-accuracy: 0.93`` …). Files are stored
through coral in-process (``clean.clean``) and only their pointers become git blobs; the tree and
commit are built with pygit2 and the branch moves with ``git update-ref`` (compare-and-swap, reflog).
Listing reads the trailers straight from history.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import pointer as ptr
from ..errors import CheckpointError, UsageError
from ..filter.clean import clean
from ..filter.smudge import smudge
from ..git import install
from ..git.autogc import maybe_spawn
from ..git.repo import Repo, find_repo, run_git
from ..store.recent import RecentTensors

ZERO = "0" * 40
TRAILER = "Coral-Checkpoint"
_TOKEN = re.compile(r"[A-Za-z0-9-]+\Z")
_TRAILER_LINE = re.compile(r"([A-Za-z0-9-]+): ?(.*)\Z")
_BAD_REF = re.compile(r"[\x00-\x20~^:?*\[\\\x7f]|\.\.|@\{|//")
LOWER_IS_BETTER = ("loss", "err", "perplexity", "ppl", "mse", "mae", "rmse", "nll", "wer", "cer")


def _COMMIT():  # pygit2 is imported lazily
    import pygit2

    return pygit2.Commit



Metric = int | float


@dataclass
class CheckpointInfo:
    """One checkpoint commit as read back from its message."""

    commit: str
    epoch: int | None
    step: int | None
    metrics: dict[str, Metric]
    reason: str = ""
    time: int = 0
    code: str | None = None
    monitor: tuple[str, str] | None = None
    tags: list[str] = field(default_factory=list)
    subject: str = ""
    extra: Any = None  # what the run's extra_state() returned (filled in by load_checkpoint)

    def as_dict(self) -> dict:
        return {
            "commit": self.commit,
            "epoch": self.epoch,
            "step": self.step,
            "metrics": dict(self.metrics),
            "reason": self.reason,
            "time": self.time,
            "code": self.code,
            "tags": list(self.tags),
        }


# -- messages ----------------------------------------------------------------------------------
def metric_value(v: object) -> Metric:
    """A metric as a plain int or float (tensors and numpy scalars via ``.item()``)."""
    if hasattr(v, "item"):
        v = v.item()  # type: ignore[union-attr]
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"metric value {v!r} is not a number") from None


def _fmt(v: Metric) -> str:
    return repr(v) if isinstance(v, int) else repr(float(v))


def format_message(
    epoch: int | None,
    step: int | None,
    metrics: dict[str, Metric],
    *,
    reason: str = "",
    monitor: tuple[str, str] | None = None,
    code: str | None = None,
    note: str = "",
) -> str:
    """The commit message: a readable subject, then the trailers that ``parse_message`` reads."""
    where = " ".join(p for p in (f"epoch {epoch}" if epoch is not None else "", f"step {step}" if step is not None else "") if p)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
    subject = "checkpoint" + (f" {where}" if where else "") + (f": {shown}" if shown else "")
    lines = [subject, ""]
    if note:
        lines += [note.strip(), ""]
    lines.append(f"{TRAILER}: 1")
    if reason:
        lines.append(f"Coral-Reason: {reason}")
    if epoch is not None:
        lines.append(f"Coral-Epoch: {int(epoch)}")
    if step is not None:
        lines.append(f"Coral-Step: {int(step)}")
    for k, v in metrics.items():
        if "\n" in k or "=" in k or not k:
            raise UsageError(f"metric name {k!r} cannot contain '=' or a newline")
        # git trailer tokens are [A-Za-z0-9-]; other names go in the value
        lines.append(f"Coral-Metric-{k}: {_fmt(v)}" if _TOKEN.match(k) else f"Coral-Metric: {k}={_fmt(v)}")
    if monitor:
        lines.append(f"Coral-Monitor: {monitor[0]} {monitor[1]}")
    if code:
        lines.append(f"Coral-Code: {code}")
    return "\n".join(lines) + "\n"


def _number(s: str) -> Metric:
    s = s.strip()
    try:
        return int(s)
    except ValueError:
        return float(s)


def parse_message(commit: str, message: str, when: int = 0) -> CheckpointInfo | None:
    """The checkpoint a commit message describes, or None when it is not a checkpoint commit."""
    paras = message.strip("\n").split("\n\n")
    trailers: list[tuple[str, str]] = []
    for ln in paras[-1].splitlines():
        m = _TRAILER_LINE.match(ln.strip())
        if m:
            trailers.append((m.group(1), m.group(2)))
    if not any(k.lower() == TRAILER.lower() for k, _ in trailers):
        return None
    info = CheckpointInfo(commit, None, None, {}, time=when, subject=paras[0].splitlines()[0] if paras[0] else "")
    for k, v in trailers:
        low = k.lower()
        try:
            if low == "coral-epoch":
                info.epoch = int(v)
            elif low == "coral-step":
                info.step = int(v)
            elif low == "coral-reason":
                info.reason = v
            elif low == "coral-code":
                info.code = v
            elif low == "coral-monitor":
                name, _, mode = v.rpartition(" ")
                info.monitor = (name, mode)
            elif low == "coral-metric":
                name, _, val = v.partition("=")
                info.metrics[name] = _number(val)
            elif low.startswith("coral-metric-"):
                info.metrics[k[len("coral-metric-") :]] = _number(v)
        except ValueError:
            continue  # a hand-edited trailer that does not parse is ignored, not fatal
    return info


def guess_mode(metric: str, infos: Iterable[CheckpointInfo] = ()) -> str:
    """``min`` or ``max`` for ``metric``: from a ``Coral-Monitor`` trailer, else from its name."""
    for i in infos:
        if i.monitor and i.monitor[0] == metric and i.monitor[1] in ("min", "max"):
            return i.monitor[1]
    low = metric.lower()
    return "min" if any(w in low for w in LOWER_IS_BETTER) else "max"


def rank(infos: list[CheckpointInfo], metric: str, mode: str) -> list[CheckpointInfo]:
    """Checkpoints that carry ``metric``, best first; on a tie the earlier checkpoint wins."""
    if mode not in ("min", "max"):
        raise UsageError(f"mode must be 'min' or 'max', not {mode!r}")
    have = [i for i in infos if metric in i.metrics and i.metrics[metric] == i.metrics[metric]]  # drop NaN
    sign = -1 if mode == "max" else 1
    return sorted(have, key=lambda i: (sign * i.metrics[metric], i.time, i.step or 0, i.epoch or 0))


def ref_component(name: str) -> str:
    """``name`` made safe to use inside a ref name."""
    out = _BAD_REF.sub("_", name).strip("/.") or "_"
    return re.sub(r"\.lock(/|\Z)", r"_lock\1", out)


# -- repository access -------------------------------------------------------------------------
def open_repo(repo_dir: str | os.PathLike | None) -> Repo:
    """The repository at ``repo_dir``; it must be set up with ``git coral init``."""
    path = Path(repo_dir) if repo_dir is not None else Path.cwd()
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory")
    repo = find_repo(path)
    cfg = repo.pygit.config
    if "filter.coral.process" not in cfg and "filter.coral.clean" not in cfg:
        raise CheckpointError(f"{path} is not set up for coral-git; run 'git coral init' there first")
    return repo


def _identity(kind: str, repo: Repo):
    import pygit2

    name = os.environ.get(f"GIT_{kind}_NAME")
    email = os.environ.get(f"GIT_{kind}_EMAIL")
    cfg = repo.pygit.config
    for key, cur in (("user.name", name), ("user.email", email)):
        if cur is None and key in cfg:
            if key == "user.name":
                name = cfg[key]
            else:
                email = cfg[key]
    offset = -time.timezone // 60 if not time.localtime().tm_isdst else -time.altzone // 60
    return pygit2.Signature(name or "coral-git", email or "coral-git@localhost", int(time.time()), offset)


def branch_tip(repo: Repo, branch: str) -> str | None:
    """The commit ``refs/heads/<branch>`` points at, or None."""
    try:
        return str(repo.pygit.references[f"refs/heads/{branch}"].resolve().target)
    except (KeyError, ValueError):
        return None


def checked_out_in(repo: Repo, branch: str) -> str | None:
    """The worktree that has ``branch`` checked out, if any."""
    out = run_git(["worktree", "list", "--porcelain"], repo.worktree or repo.git_dir).stdout.decode()
    wt = None
    for ln in out.splitlines():
        if ln.startswith("worktree "):
            wt = ln[len("worktree ") :]
        elif ln == f"branch refs/heads/{branch}":
            return wt or "?"
    return None


def update_refs(repo: Repo, updates: list[tuple[str, str | None, str | None]], message: str) -> None:
    """Move refs in one transaction: ``(ref, new or None to delete, expected old or None for any)``."""
    if not updates:
        return
    lines = []
    for ref, new, old in updates:
        if new is None:
            lines.append(f"delete {ref}" + (f" {old}" if old else ""))
        else:
            lines.append(f"update {ref} {new}" + (f" {old}" if old else ""))
    proc = run_git(["update-ref", "-m", message, "--stdin"], repo.git_dir, ("\n".join(lines) + "\n").encode())
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise CheckpointError(f"could not move {updates[0][0]}: {err[-1] if err else proc.returncode}")


def tags_by_commit(repo: Repo, prefix: str = "refs/tags/") -> dict[str, list[str]]:
    """Tag names (without ``refs/tags/``) grouped by the commit they point at."""
    out = run_git(["for-each-ref", "--format=%(objectname) %(*objectname) %(refname)", prefix], repo.git_dir).stdout.decode()
    got: dict[str, list[str]] = {}
    for ln in out.splitlines():
        parts = ln.split(" ")
        if len(parts) == 3:
            target = parts[1] or parts[0]
            got.setdefault(target, []).append(parts[2][len("refs/tags/") :])
    return got


def tag_targets(repo: Repo, prefix: str) -> dict[str, str]:
    """``{tag name: commit}`` for tags under ``refs/tags/<prefix>``."""
    out = {}
    for commit, names in tags_by_commit(repo, "refs/tags/" + prefix).items():
        for n in names:
            out[n] = commit
    return out


def history(repo: Repo, branch: str) -> list[CheckpointInfo]:
    """Checkpoint commits on ``branch``, newest first (first-parent walk)."""
    import pygit2

    tip = branch_tip(repo, branch)
    if tip is None:
        return []
    r = repo.pygit
    out: list[CheckpointInfo] = []
    walker = r.walk(pygit2.Oid(hex=tip), pygit2.enums.SortMode.TOPOLOGICAL)
    walker.simplify_first_parent()
    for c in walker:
        info = parse_message(str(c.id), c.message, c.commit_time)
        if info is not None:
            out.append(info)
    return out


def list_checkpoints(
    repo_dir: str | os.PathLike | None = None,
    branch: str = "checkpoints",
    metric: str | None = None,
    mode: str | None = None,
) -> list[CheckpointInfo]:
    """Checkpoints on ``branch`` with their metrics and tags: newest first, or best first for ``metric``."""
    repo = open_repo(repo_dir)
    infos = history(repo, branch)
    tags = tags_by_commit(repo)
    for i in infos:
        i.tags = sorted(tags.get(i.commit, []))
    if metric is None:
        return infos
    ranked = rank(infos, metric, mode or guess_mode(metric, infos))
    seen = {i.commit for i in ranked}
    return ranked + [i for i in infos if i.commit not in seen]


def resolve(
    repo: Repo,
    branch: str = "checkpoints",
    *,
    best: str | None = None,
    mode: str | None = None,
    tag: str | None = None,
    rev: str | None = None,
    tag_prefix: str = "",
) -> str:
    """The commit id a load request names: a tag, a revision, the best for a metric, or the branch tip."""
    r = repo.pygit
    if sum(x is not None for x in (best, tag, rev)) > 1:
        raise UsageError("give at most one of best=, tag= and rev=")
    try:
        if tag is not None:
            return str(r.revparse_single(f"refs/tags/{tag}").peel(_COMMIT()).id)
        if rev is not None:
            return str(r.revparse_single(rev).peel(_COMMIT()).id)
    except (KeyError, ValueError):
        raise CheckpointError(f"no such {'tag' if tag is not None else 'revision'}: {tag if tag is not None else rev}") from None
    if best is not None:
        infos = history(repo, branch)
        tagname = f"refs/tags/{tag_prefix}best/{ref_component(best)}/1"
        if mode is None and tagname in r.references:
            return str(r.references[tagname].peel(_COMMIT()).id)
        ranked = rank(infos, best, mode or guess_mode(best, infos))
        if not ranked:
            raise CheckpointError(f"no checkpoint on branch '{branch}' records metric '{best}'")
        return ranked[0].commit
    tip = branch_tip(repo, branch)
    if tip is None:
        raise CheckpointError(f"branch '{branch}' has no checkpoints")
    return tip


def commit_info(repo: Repo, commit: str) -> CheckpointInfo:
    c = repo.pygit[commit]
    info = parse_message(commit, c.message, c.commit_time)
    if info is None:
        raise CheckpointError(f"commit {commit[:12]} is not a coral checkpoint (no {TRAILER} trailer)")
    return info


def read_file(repo: Repo, commit: str, path: str) -> bytes:
    """The bytes of ``path`` at ``commit``, smudged from the store when the blob is a pointer."""
    try:
        blob = repo.pygit[commit].peel(_COMMIT()).tree[path]
    except KeyError:
        raise CheckpointError(f"commit {commit[:12]} has no file {path}") from None
    data = blob.data
    if not ptr.looks_like_pointer(data):
        return data
    p = ptr.parse(data)
    buf = bytearray()
    smudge(p, repo.store, lambda mv: buf.extend(mv), path=path, workers=repo.workers)
    return bytes(buf)


# -- writing -----------------------------------------------------------------------------------
class BranchWriter:
    """Commits files to one branch of one repository without touching its work tree or index.

    Not thread-safe: use each instance from one thread (pygit2 objects are per thread).
    """

    def __init__(self, repo_dir: str | os.PathLike, branch: str) -> None:
        self.repo = open_repo(repo_dir)
        if not branch or _BAD_REF.search(branch) or branch.startswith("-"):
            raise UsageError(f"'{branch}' is not a valid branch name")
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        where = checked_out_in(self.repo, branch)
        if where is not None:
            raise CheckpointError(
                f"branch '{branch}' is checked out in {where}; checkpoints need a branch that no worktree has checked out"
            )
        self.recent = RecentTensors(self.repo.store_root / "recent")
        self._written = 0  # store.written after the last maintenance check

    def _previous(self, tree, path: str) -> ptr.Pointer | None:
        try:
            data = tree[path].data
        except (KeyError, AttributeError):
            return None
        return ptr.try_parse(data)

    def commit(self, files: dict[str, bytes | memoryview], message: str) -> str:
        """Store ``files`` through coral and commit them on the branch tip; return the commit id."""
        import pygit2

        r = self.repo.pygit
        parent = branch_tip(self.repo, self.branch)
        ptree = r[parent].peel(pygit2.Commit).tree if parent else None
        tb = r.TreeBuilder(ptree) if ptree is not None else r.TreeBuilder()
        for path, data in files.items():
            if "/" in path:
                raise UsageError(f"checkpoint file names cannot contain '/': {path}")
            res = clean(
                data,
                self.repo.store,
                previous=self._previous(ptree, path) if ptree is not None else None,
                recent=self.recent,
                chunk_bytes=self.repo.chunk_bytes,
                workers=self.repo.workers,
            )
            tb.insert(path, r.create_blob(res.pointer.encode()), pygit2.enums.FileMode.BLOB)
        attrs = self._attributes(ptree, list(files))
        if attrs is not None:
            tb.insert(".gitattributes", r.create_blob(attrs), pygit2.enums.FileMode.BLOB)
        tree = tb.write()
        author = _identity("AUTHOR", self.repo)
        committer = _identity("COMMITTER", self.repo)
        oid = r.create_commit(None, author, committer, message, tree, [pygit2.Oid(hex=parent)] if parent else [])
        new = str(oid)
        update_refs(self.repo, [(self.ref, new, parent or ZERO)], "coral checkpoint: " + message.splitlines()[0])
        if self.repo.store.written > self._written:  # this commit stored objects: maybe time for maintenance
            self._written = self.repo.store.written
            maybe_spawn(self.repo)
        return new

    def _attributes(self, ptree, paths: list[str]) -> bytes | None:
        """A .gitattributes that stores ``paths`` through coral, or None when the tree already has one."""
        try:
            text = ptree[".gitattributes"].data.decode() if ptree is not None else ""
        except KeyError:
            text = ""
        have = {ln.split()[0] for ln in text.splitlines() if ln.split() and "filter=coral" in ln}
        want = []
        for p in paths:
            suffix = "*" + os.path.splitext(p)[1]
            if p not in have and suffix not in have:
                want.append(suffix if suffix in install.DEFAULT_PATTERNS else p)
        if not want:
            return None
        lines = text.splitlines() + [install.attribute_line(w) for w in dict.fromkeys(want)]
        return ("\n".join(lines) + "\n").encode()

    def move_tags(self, wanted: dict[str, str | None], message: str) -> None:
        """Point tags at commits (None deletes), in one transaction; unchanged tags are left alone."""
        r = self.repo.pygit
        updates: list[tuple[str, str | None, str | None]] = []
        for name, target in wanted.items():
            ref = f"refs/tags/{name}"
            cur = str(r.references[ref].target) if ref in r.references else None
            if cur == target:
                continue
            if target is None:
                updates.append((ref, None, None))
            else:
                updates.append((ref, target, None))
        update_refs(self.repo, updates, message)

    def detach(self, commit: str) -> str:
        """``commit`` re-created without parents (same tree, message and signatures), so that a tag on it
        does not keep the checkpoints before it alive."""
        import pygit2

        c = self.repo.pygit[commit].peel(pygit2.Commit)
        if not c.parents:
            return commit
        return str(self.repo.pygit.create_commit(None, c.author, c.committer, c.message, c.tree_id, []))

    def keep_last(self, keep: int) -> dict[str, str]:
        """Rewrite the branch so it holds only its newest ``keep`` checkpoints; return old → new ids.

        Retained commits keep their trees, messages and signatures; only parents change, so the
        oldest retained one sits on the branch's first non-checkpoint ancestor (or becomes a root).
        """
        import pygit2

        r = self.repo.pygit
        tip = branch_tip(self.repo, self.branch)
        if tip is None:
            return {}
        chain: list = []
        base = None
        c = r[tip].peel(pygit2.Commit)
        while True:
            if parse_message(str(c.id), c.message) is None:
                base = c
                break
            chain.append(c)
            if not c.parents:
                break
            c = c.parents[0]
        if len(chain) <= keep:
            return {}
        kept = list(reversed(chain[:keep]))
        mapping: dict[str, str] = {}
        parent = [base.id] if base is not None else []
        for c in kept:
            oid = r.create_commit(None, c.author, c.committer, c.message, c.tree_id, parent)
            mapping[str(c.id)] = str(oid)
            parent = [oid]
        update_refs(self.repo, [(self.ref, str(parent[0]), tip)], f"coral checkpoint: keep last {keep}")
        return mapping


def missing_adapter(name: str, message: str) -> type:
    """A stand-in for an adapter whose framework is not installed: constructing it says what to install."""

    def __init__(self: object, *args: object, **kwargs: object) -> None:
        raise CheckpointError(message)

    return type(name, (), {"__init__": __init__, "__doc__": f"Placeholder: {message}"})
