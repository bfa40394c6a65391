"""Versioned checkpoints from a PyTorch training loop: policies, async saves and exact resume.

Each checkpoint is a commit on a branch (default ``checkpoints``) holding

* ``model.safetensors`` – the model's ``state_dict`` (tied tensors stored once, see ``coral.aliases``);
* ``training_state.safetensors`` – optimizer and scheduler state, epoch/step counters, RNG states
  (python, numpy, torch) and metrics: tensors as safetensors tensors, the rest as JSON in the header
  metadata. Nothing is pickled, so loading never runs a pickle.

The commit message carries the metrics as git trailers; ``list_checkpoints`` reads them back.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, UsageError
from . import checkpoints as ck
from .checkpoints import CheckpointInfo, list_checkpoints

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointPolicy",
    "SavedCheckpoint",
    "list_checkpoints",
    "load_checkpoint",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
STATE_KEY = "coral.training_state"
ALIAS_KEY = "coral.aliases"
FORMAT = 1


# -- policy ------------------------------------------------------------------------------------
@dataclass
class CheckpointPolicy:
    """When to checkpoint and which refs to keep.

    every_n_epochs / every_n_steps / every_minutes: save on ``epoch_end`` / ``step`` when due.
    monitor + mode: the metric that ranks checkpoints (``max`` or ``min``); ``save_on_best`` saves
    whenever it improves; ``keep_best`` tags the best K as ``best/<metric>/1..K`` (moved as better
    ones arrive). keep_last: the newest M as tags ``last/1..M`` (``keep_last_as="tags"``) or by
    rewriting the branch to hold only them (``"branch"``). Only refs move; ``git coral gc`` reclaims
    what no ref (or reflog) reaches any more.
    """

    every_n_epochs: int | None = 1
    every_n_steps: int | None = None
    every_minutes: float | None = None
    monitor: str | None = None
    mode: str = "max"
    save_on_best: bool = True
    keep_best: int = 1
    keep_last: int | None = None
    keep_last_as: str = "tags"

    def __post_init__(self) -> None:
        for name in ("every_n_epochs", "every_n_steps", "keep_last"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UsageError(f"CheckpointPolicy.{name} must be a positive integer or None, not {v!r}")
        if self.every_minutes is not None and self.every_minutes <= 0:
            raise UsageError("CheckpointPolicy.every_minutes must be positive")
        if self.mode not in ("min", "max"):
            raise UsageError(f"CheckpointPolicy.mode must be 'min' or 'max', not {self.mode!r}")
        if self.keep_best < 0:
            raise UsageError("CheckpointPolicy.keep_best must be >= 0")
        if self.keep_last_as not in ("tags", "branch"):
            raise UsageError("CheckpointPolicy.keep_last_as must be 'tags' or 'branch'")

    def better(self, new: float, old: float | None) -> bool:
        if new != new:  # NaN never improves
            return False
        return old is None or (new > old if self.mode == "max" else new < old)


@dataclass
class SavedCheckpoint:
    """What callbacks receive after a checkpoint commit."""

    commit: str
    epoch: int
    step: int
    metrics: dict[str, ck.Metric]
    reason: str
    tags: list[str] = field(default_factory=list)


Callback = Callable[[SavedCheckpoint], None]


# -- state tree <-> JSON + tensors ---------------------------------------------------------------
Pool = dict[str, torch.Tensor]


def _cpu_copy(t: torch.Tensor, key: str, pool: Pool | None) -> torch.Tensor:
    """A contiguous CPU copy of ``t``, written into ``pool[key]`` when that buffer fits (no page faults)."""
    buf = pool.pop(key, None) if pool is not None else None
    if buf is not None and buf.shape == t.shape and buf.dtype == t.dtype:
        return buf.copy_(t)
    return t.to("cpu", copy=True).contiguous()


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor], copy: bool, pool: Pool | None = None) -> Any:
    """JSON-able form of ``obj``; tensors go to ``tensors`` under a name derived from ``path``.

    ``copy``: tensors are copied (into ``pool`` buffers when given), so later changes do not leak in.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return {"__float__": repr(obj)} if obj != obj or obj in (float("inf"), float("-inf")) else obj
    if isinstance(obj, torch.Tensor):
        name = path or "tensor"
        while name in tensors:
            name += "_"
        t = obj.detach()
        if t.layout != torch.strided:
            raise CheckpointError(f"cannot store a {t.layout} tensor at {path}")
        tensors[name] = _cpu_copy(t, "s:" + name, pool) if copy else t.cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        name = path or "array"
        while name in tensors:
            name += "_"
        dt = obj.dtype.str
        arr = obj.astype(np.int64) if obj.dtype in (np.uint32, np.uint64, np.uint16) else obj
        tensors[name] = torch.from_numpy(np.ascontiguousarray(arr).copy())
        return {"__ndarray__": name, "dtype": dt}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), path, tensors, copy, pool)
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors, copy, pool) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors, copy, pool) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise CheckpointError(f"cannot store dict key {k!r} at {path}: keys must be str or int")
            items.append([k, _encode(v, f"{path}.{k}" if path else str(k), tensors, copy, pool)])
        return {"__dict__": items}
    raise CheckpointError(f"cannot store {type(obj).__name__} at {path or 'top level'} in a checkpoint")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
    raise CheckpointError(f"training state has an unknown entry {sorted(obj)[:3]}")


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of tensors that share storage with an earlier one (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for k, t in tensors.items():
        key = t.untyped_storage().data_ptr() if t.numel() else -1
        if key in seen and key != -1:
            t = t.clone()
        else:
            seen.add(key)
        out[k] = t
    return out


def model_snapshot(
    model: torch.nn.Module, copy: bool, pool: Pool | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's tensors (tied ones once) and the aliases ``{dropped name: kept name}``."""
    sd = model.state_dict()
    kept: dict[tuple, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"state_dict entry {name} is a {type(t).__name__}, not a tensor")
        t = t.detach()
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and ident in kept:
            aliases[name] = kept[ident]
            continue
        kept[ident] = name
        tensors[name] = _cpu_copy(t, "m:" + name, pool) if copy else t.cpu().contiguous()
    return _unshare(tensors), aliases


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU, and CUDA when present) random states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "python" in state:
        v = state["python"]
        random.setstate((v[0], tuple(v[1]), v[2]))
    if "numpy" in state:
        np.random.set_state(tuple(state["numpy"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in state["cuda"]])


def encode_files(
    model_tensors: dict[str, torch.Tensor],
    aliases: dict[str, str],
    training: dict[str, Any],
    copy: bool = False,
    buffers: dict[str, bytearray] | None = None,
) -> dict[str, bytes | memoryview]:
    """The two checkpoint files' bytes. With ``buffers`` (kept by the caller from one save to the
    next, and only reused once the files were committed) they are views of reused buffers: the same
    bytes as ``safetensors.torch.save`` without a fresh file-sized allocation per checkpoint."""
    from .stwriter import save_into

    meta = {ALIAS_KEY: json.dumps(aliases, sort_keys=True)} if aliases else None
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(training, "", tensors, copy)
    state_meta = {STATE_KEY: json.dumps({"format": FORMAT, "state": tree})}
    pool = buffers if buffers is not None else {}
    out: dict[str, bytes | memoryview] = {}
    for name, ts, md in ((MODEL_FILE, model_tensors, meta), (STATE_FILE, _unshare(tensors), state_meta)):
        out[name], pool[name] = save_into(ts, md, pool.get(name))
    return out


def decode_files(model_bytes: bytes, state_bytes: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model state dict (aliases filled in) and the training state from the two files' bytes."""
    from safetensors.torch import load

    model_sd = load(model_bytes)
    aliases = json.loads(_metadata(model_bytes).get(ALIAS_KEY, "{}"))
    for name, target in aliases.items():
        model_sd[name] = model_sd[target]
    meta = _metadata(state_bytes)
    if STATE_KEY not in meta:
        raise CheckpointError(f"{STATE_FILE} has no {STATE_KEY} metadata")
    doc = json.loads(meta[STATE_KEY])
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{STATE_FILE} has format {doc.get('format')}; this coral-git reads {FORMAT}")
    return model_sd, _decode(doc["state"], load(state_bytes))


def _metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise CheckpointError("not a safetensors file")
    return json.loads(data[8 : 8 + n]).get("__metadata__") or {}


# -- loading -----------------------------------------------------------------------------------
def load_checkpoint(
    repo_dir: str | os.PathLike | None,
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    best: str | None = None,
    mode: str | None = None,
    tag: str | None = None,
    rev: str | None = None,
    latest: bool = True,
    branch: str = "checkpoints",
    tag_prefix: str = "",
    restore_rng: bool = True,
    strict: bool = True,
) -> CheckpointInfo:
    """Restore model, optimizer, scheduler and RNG from a checkpoint; return its info (epoch, step, metrics).

    Pick it with ``best="accuracy"`` (tag ``best/accuracy/1``, else ranked from history), ``tag=``,
    ``rev=`` (any git revision), or by default the newest checkpoint on ``branch``.
    """
    if not (latest or best or tag or rev):
        raise UsageError("load_checkpoint needs one of best=, tag=, rev= or latest=True")
    repo = ck.open_repo(repo_dir)
    commit = ck.resolve(repo, branch, best=best, mode=mode, tag=tag, rev=rev, tag_prefix=tag_prefix)
    info = ck.commit_info(repo, commit)
    model_sd, training = decode_files(ck.read_file(repo, commit, MODEL_FILE), ck.read_file(repo, commit, STATE_FILE))
    if model is not None:
        model.load_state_dict(model_sd, strict=strict)
    if optimizer is not None:
        if training.get("optimizer") is None:
            raise CheckpointError(f"checkpoint {commit[:12]} has no optimizer state")
        optimizer.load_state_dict(training["optimizer"])
    if scheduler is not None:
        if training.get("scheduler") is None:
            raise CheckpointError(f"checkpoint {commit[:12]} has no scheduler state")
        scheduler.load_state_dict(training["scheduler"])
    if restore_rng and training.get("rng"):
        set_rng_state(training["rng"])
    info.epoch = training.get("epoch", info.epoch)
    info.step = training.get("step", info.step)
    info.extra = training.get("extra")
    info.tags = sorted(ck.tags_by_commit(repo).get(commit, []))
    return info


# -- the manager -------------------------------------------------------------------------------
@dataclass
class _Job:
    files: dict[str, bytes | memoryview] | None
    snapshot: tuple | None
    message: str
    epoch: int
    step: int
    metrics: dict[str, ck.Metric]
    reason: str


class CheckpointManager:
    """Turns checkpoints of a training loop into commits on ``branch`` of the repository at ``repo_dir``.

    Call ``step(**metrics)`` after each optimizer step, ``epoch_end(epoch, **metrics)`` after each
    epoch, ``save(**metrics)`` to checkpoint now, and ``close()`` at the end (or use ``with``).
    With ``async_=True`` a save returns once tensors are copied off the model; encoding and the
    commit run on a background thread (at most ``max_pending`` saves queued). A failed background
    save raises ``CheckpointError`` from the next call, ``flush()`` or ``close()``, and is reported
    on stderr at interpreter exit if nothing picked it up.
    """

    def __init__(
        self,
        repo_dir: str | os.PathLike,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        branch: str = "checkpoints",
        policy: CheckpointPolicy | None = None,
        async_: bool = False,
        max_pending: int = 2,
        tag_prefix: str = "",
        callbacks: list[Callback] | None = None,
        extra_state: Callable[[], Any] | None = None,
    ) -> None:
        self.repo_dir = os.fspath(repo_dir)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.branch = branch
        self.policy = policy or CheckpointPolicy()
        self.tag_prefix = tag_prefix
        self.callbacks: list[Callback] = list(callbacks or [])
        self.extra_state = extra_state
        self.epoch = 0
        self.global_step = 0
        self.last_commit: str | None = None
        self._writer = ck.BranchWriter(self.repo_dir, branch)  # validates repo and branch now
        repo = self._writer.repo
        self._code = _head(repo)
        self._history = ck.history(repo, branch)  # newest first; kept current by the writer thread
        self._last_saved_at = time.monotonic()
        self._best_seen: float | None = None
        mon = self.policy.monitor
        if mon:
            ranked = ck.rank(self._history, mon, self.policy.mode)
            self._best_seen = float(ranked[0].metrics[mon]) if ranked else None
        self._error: BaseException | None = None
        self._dropped = 0
        self._spare: Pool | None = None
        self._file_buffers: dict[str, bytearray] = {}  # sync saves: the files' bytes, reused
        self._async_file_buffers: dict[str, bytearray] = {}  # the same for the committing thread
        self._closed = False
        self._async = async_
        self._queue: queue.Queue[_Job | None] | None = None
        self._thread: threading.Thread | None = None
        if async_:
            self._writer = None  # type: ignore[assignment]  # the worker opens its own (pygit2 is per thread)
            self._queue = queue.Queue(maxsize=max(1, max_pending))
            self._thread = threading.Thread(target=self._work, name="coral-checkpoints", daemon=True)
            self._thread.start()
        _register_exit(self)

    # -- training-loop hooks ---------------------------------------------------------------------
    def step(self, **metrics: Any) -> str | None:
        """Count one optimizer step; save when the step/time/best policy says so."""
        self._raise_pending()
        self.global_step += 1
        reasons = []
        n = self.policy.every_n_steps
        if n and self.global_step % n == 0:
            reasons.append("step")
        return self._maybe_save(reasons, metrics)

    def epoch_end(self, epoch: int | None = None, **metrics: Any) -> str | None:
        """Mark epoch ``epoch`` (default: the next one) as done; save when the policy says so."""
        self._raise_pending()
        self.epoch = self.epoch + 1 if epoch is None else int(epoch)
        reasons = []
        n = self.policy.every_n_epochs
        if n and self.epoch % n == 0:
            reasons.append("epoch")
        return self._maybe_save(reasons, metrics)

    def _maybe_save(self, reasons: list[str], metrics: dict[str, Any]) -> str | None:
        values = {k: ck.metric_value(v) for k, v in metrics.items()}
        mon = self.policy.monitor
        if mon and mon in values and self.policy.better(float(values[mon]), self._best_seen):
            if self.policy.save_on_best:
                reasons.append("best")
        mins = self.policy.every_minutes
        if mins and time.monotonic() - self._last_saved_at >= mins * 60:
            reasons.append("time")
        if not reasons:
            return None
        return self.save(reason=",".join(reasons), **values)

    def save(self, reason: str = "manual", **metrics: Any) -> str | None:
        """Checkpoint now. Returns the commit id, or None when the commit is queued (async mode)."""
        self._raise_pending()
        if self._closed:
            raise CheckpointError("this CheckpointManager is closed")
        values = {k: ck.metric_value(v) for k, v in metrics.items()}
        mon = self.policy.monitor
        if mon and mon in values and self.policy.better(float(values[mon]), self._best_seen):
            self._best_seen = float(values[mon])
        self._last_saved_at = time.monotonic()
        training = {
            "format": FORMAT,
            "epoch": self.epoch,
            "step": self.global_step,
            "metrics": values,
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng_state(),
            "extra": self.extra_state() if self.extra_state is not None else None,
        }
        message = ck.format_message(
            self.epoch,
            self.global_step,
            values,
            reason=reason,
            monitor=(mon, self.policy.mode) if mon else None,
            code=self._code,
        )
        if not self._async:
            tensors, aliases = model_snapshot(self.model, copy=False)
            # the files' buffers are reused by the next sync save: this commit is done with them by then
            files = encode_files(tensors, aliases, training, buffers=self._file_buffers)
            job = _Job(files, None, message, self.epoch, self.global_step, values, reason)
            return self._commit(self._writer, job)
        # async: copy everything off the model and optimizer now; encode and commit later
        pool, self._spare = self._spare or {}, None  # buffers of an encoded checkpoint, reused
        tensors, aliases = model_snapshot(self.model, copy=True, pool=pool)
        state_tensors: dict[str, torch.Tensor] = {}
        tree = _encode(training, "", state_tensors, copy=True, pool=pool)
        del pool
        job = _Job(None, (tensors, aliases, tree, state_tensors), message, self.epoch, self.global_step, values, reason)
        assert self._queue is not None
        self._queue.put(job)
        return None

    # -- committing ------------------------------------------------------------------------------
    def _commit(self, writer: ck.BranchWriter, job: _Job) -> str:
        files = job.files
        if files is None:
            from .stwriter import save_into

            tensors, aliases, tree, state_tensors = job.snapshot  # type: ignore[misc]
            meta = {ALIAS_KEY: json.dumps(aliases, sort_keys=True)} if aliases else None
            state_meta = {STATE_KEY: json.dumps({"format": FORMAT, "state": tree})}
            pool = self._async_file_buffers  # one job at a time: the last one was committed
            files = {}
            for name, ts, md in ((MODEL_FILE, tensors, meta), (STATE_FILE, _unshare(state_tensors), state_meta)):
                files[name], pool[name] = save_into(ts, md, pool.get(name))
            job.snapshot = None
            spare = {"m:" + k: v for k, v in tensors.items()}
            spare.update(("s:" + k, v) for k, v in state_tensors.items())
            self._spare = spare  # the next async save copies into these instead of allocating
        commit = writer.commit(files, job.message)
        info = ck.parse_message(commit, job.message, int(time.time()))
        assert info is not None
        self._history.insert(0, info)
        commit, tags = self._move_refs(writer, commit)
        self.last_commit = commit
        saved = SavedCheckpoint(commit, job.epoch, job.step, job.metrics, job.reason, tags)
        for cb in self.callbacks:
            cb(saved)
        return commit

    def _move_refs(self, writer: ck.BranchWriter, commit: str) -> tuple[str, list[str]]:
        """Apply keep_last (branch rewrite or tags) and keep_best tags after a new commit."""
        p = self.policy
        mapping: dict[str, str] = {}
        if p.keep_last and p.keep_last_as == "branch":
            mapping = writer.keep_last(p.keep_last)
            if mapping:
                self._history = [replace(i, commit=mapping[i.commit]) for i in self._history if i.commit in mapping]
                commit = mapping.get(commit, commit)
        wanted: dict[str, str | None] = {}
        if p.keep_last and p.keep_last_as == "tags":
            for n, info in enumerate(self._history[: p.keep_last], 1):
                wanted[f"{self.tag_prefix}last/{n}"] = info.commit
        if p.monitor and p.keep_best:
            prefix = f"{self.tag_prefix}best/{ck.ref_component(p.monitor)}/"
            candidates = list(self._history)
            if p.keep_last and p.keep_last_as == "branch":
                # checkpoints dropped from the branch stay candidates while a best tag holds them
                on_branch = {i.commit for i in candidates}
                for target in ck.tag_targets(writer.repo, prefix).values():
                    target = mapping.get(target, target)
                    if target not in on_branch:
                        on_branch.add(target)
                        candidates.append(ck.commit_info(writer.repo, target))
            on_branch = {i.commit for i in self._history}
            for n, info in enumerate(ck.rank(candidates, p.monitor, p.mode)[: p.keep_best], 1):
                target = info.commit
                if p.keep_last and p.keep_last_as == "branch" and target not in on_branch:
                    target = writer.detach(target)  # off the branch: held alone, not with its ancestors
                wanted[f"{prefix}{n}"] = target
        writer.move_tags(wanted, f"coral checkpoint tags after {commit[:12]}")
        return commit, sorted(k for k, v in wanted.items() if v == commit)

    def _work(self) -> None:
        assert self._queue is not None
        writer: ck.BranchWriter | None = None
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is not None:
                    self._dropped += 1  # after a failure, later saves are dropped until the error is raised
                    continue
                if writer is None:
                    writer = ck.BranchWriter(self.repo_dir, self.branch)
                self._commit(writer, job)
            except BaseException as exc:  # surfaced on the next call, flush() or at exit
                self._error = exc
            finally:
                self._queue.task_done()

    # -- errors, flush, close --------------------------------------------------------------------
    def _raise_pending(self) -> None:
        exc = self._error
        if exc is not None:
            dropped, self._dropped = self._dropped, 0
            self._error = None
            what = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            more = f" ({dropped} later checkpoint(s) dropped)" if dropped else ""
            raise CheckpointError(f"background checkpoint failed: {what}{more}") from exc

    def flush(self) -> None:
        """Wait until every queued checkpoint is committed; raise if one failed."""
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._queue.join()
        self._raise_pending()

    def close(self) -> None:
        """Flush and stop the background thread. Safe to call twice."""
        if self._closed:
            self._raise_pending()
            return
        self._closed = True
        try:
            self.flush()
        finally:
            if self._queue is not None and self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()

    def _at_exit(self) -> None:
        if self._closed:
            return
        try:
            self.close()
        except Exception as exc:
            sys.stderr.write(f"coral-git: {exc}\n")
            sys.stderr.flush()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- resume ----------------------------------------------------------------------------------
    def resume(
        self,
        *,
        best: str | None = None,
        tag: str | None = None,
        rev: str | None = None,
        latest: bool = True,
        restore_rng: bool = True,
    ) -> CheckpointInfo | None:
        """Load a checkpoint into the bound model/optimizer/scheduler and continue its counters.

        With only ``latest=True`` and no checkpoint on the branch yet, returns None (a fresh start).
        """
        self.flush()
        if best is None and tag is None and rev is None and not self._history and latest:
            return None
        info = load_checkpoint(
            self.repo_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            best=best,
            tag=tag,
            rev=rev,
            latest=latest,
            branch=self.branch,
            tag_prefix=self.tag_prefix,
            restore_rng=restore_rng,
        )
        self.epoch = info.epoch or 0
        self.global_step = info.step or 0
        self._last_saved_at = time.monotonic()
        return info


def _register_exit(mgr: CheckpointManager) -> None:
    """Flush ``mgr`` at interpreter exit, before concurrent.futures stops accepting work.

    threading's exit hooks run before ``atexit`` ones, and concurrent.futures uses them to shut its
    pools down; registering here (after it) makes ours run first. Only a weak reference is held.
    """
    ref = weakref.ref(mgr)

    def hook() -> None:
        m = ref()
        if m is not None:
            m._at_exit()

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError
        register(hook)
    except RuntimeError:
        atexit.register(hook)


def _head(repo: ck.Repo) -> str | None:
    try:
        return str(repo.pygit.head.target)
    except Exception:
        return None
