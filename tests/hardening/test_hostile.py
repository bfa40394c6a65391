"""Hostile pickles are never executed: not by clean, checkout, diff, merge, stats or the Python API.

Each payload creates a marker file when unpickled. A control first proves that every payload is
live (plain ``pickle.loads`` in a child does create the marker); then the real git commands run on
files that carry it, both inside ``torch.save`` zip files and as legacy raw pickles with a ``.pt``
suffix, and the marker must never appear.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
from helpers import coral, git

torch = pytest.importorskip("torch")


class G:
    """Pickles as ``GLOBAL module name``, whatever that names (lets us write ``os.system``, not ``posix``)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *a: object) -> None:  # pickle wants reduce functions to be callable
        raise RuntimeError("never called while pickling")


class Evil:
    """An object whose ``__reduce__`` is ``(func, args)``: unpickling calls ``func(*args)``."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)

    def __call__(self, *a: object) -> None:
        raise RuntimeError("never called while pickling")


class HostilePickler(pickle._Pickler):  # type: ignore[name-defined]
    def save(self, obj: object, save_persistent_id: bool = True) -> None:
        if isinstance(obj, G):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)


_mod = types.ModuleType("hostile_pickle")
_mod.Pickler = HostilePickler  # type: ignore[attr-defined]


def payloads(marker: Path) -> dict[str, object]:
    """Every way we know to run code from a pickle, each creating ``marker``."""
    m = str(marker)
    touch = f"touch {m}"
    opener = f"open({m!r}, 'w').close()"
    getattr_chain = Evil(Evil(G("builtins", "getattr"), (Evil(G("builtins", "__import__"), ("os",)), "system")), (touch,))
    return {
        "os_system": Evil(G("os", "system"), (touch,)),
        "posix_system": Evil(G("posix", "system"), (touch,)),
        "builtins_eval": Evil(G("builtins", "eval"), (opener,)),
        "builtins_exec": Evil(G("builtins", "exec"), (opener,)),
        "subprocess_popen": Evil(G("subprocess", "Popen"), (["touch", m],)),
        "subprocess_run": Evil(G("subprocess", "run"), (["touch", m],)),
        "getattr_import": getattr_chain,
        "nested_reduce": [{"deep": (1, Evil(G("os", "system"), (touch,)))}],
    }


def torch_zip(payload: object, seed: int) -> bytes:
    """A real ``torch.save`` zip whose pickle runs ``payload`` before the tensors are rebuilt."""
    g = torch.Generator().manual_seed(seed)
    state = {"aaa_payload": payload, "w": torch.randn(64, 64, generator=g), "b": torch.zeros(64)}
    buf = io.BytesIO()
    torch.save(state, buf, pickle_module=_mod)
    return buf.getvalue()


def legacy_pickle(payload: object) -> bytes:
    """A raw pickle stream (what a pre-1.6 ``.pt`` or a hand-made one is): the payload first."""
    buf = io.BytesIO()
    HostilePickler(buf, protocol=2).dump({"payload": payload, "w": [0.5] * 16})
    return buf.getvalue()


def _data_pkl(blob: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


LIVE = """
import os, pickle, sys, time
marker = sys.argv[1]
class U(pickle.Unpickler):
    def persistent_load(self, pid):
        return None
    def find_class(self, module, name):
        if module.startswith("torch"):  # keep the control fast: no torch import
            return lambda *a, **k: None
        return super().find_class(module, name)
for path in sys.argv[2:]:
    try:
        U(open(path, "rb")).load()
    except Exception:
        pass
    for _ in range(100):  # Popen runs its child asynchronously
        if os.path.exists(marker):
            break
        time.sleep(0.02)
    print("live" if os.path.exists(marker) else "dead", flush=True)
    if os.path.exists(marker):
        os.unlink(marker)
"""


def _assert_live(pickles: list[bytes], marker: Path, tmp: Path) -> None:
    """Control: plain pickle does run every payload (so the tests can fail). One child for all."""
    paths = []
    for i, pkl in enumerate(pickles):
        f = tmp / f"control{i}.pkl"
        f.write_bytes(pkl)
        paths.append(str(f))
    proc = subprocess.run([sys.executable, "-c", LIVE, str(marker), *paths], cwd=tmp, capture_output=True, timeout=120)
    verdicts = proc.stdout.decode().split()
    assert verdicts == ["live"] * len(pickles), f"a payload is not live, the test would prove nothing: {verdicts}"
    assert not marker.exists()
    for f in paths:
        os.unlink(f)


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """One hostile torch zip and one hostile legacy pickle per payload, each checked to be live."""
    tmp = tmp_path_factory.mktemp("hostile")
    marker = tmp / "PWNED"
    files: dict[str, bytes] = {}
    for i, (name, payload) in enumerate(payloads(marker).items()):
        files[f"zip_{name}.pt"] = torch_zip(payload, i)
        files[f"legacy_{name}.pt"] = legacy_pickle(payload)
    _assert_live([_data_pkl(b) if n.startswith("zip_") else b for n, b in files.items()], marker, tmp)
    return marker, files


@pytest.fixture
def hostile_repo(repo: Path, hostile_files: tuple[Path, dict[str, bytes]]) -> tuple[Path, Path, dict[str, bytes]]:
    """A repo with the hostile files committed."""
    marker, files = hostile_files
    for name, blob in files.items():
        (repo / name).write_bytes(blob)
    git(repo, "add", *files)
    git(repo, "commit", "-qm", "hostile checkpoints")
    assert not marker.exists()
    return repo, marker, files


def test_add_commit_checkout_clone_never_execute(hostile_repo: tuple[Path, Path, dict[str, bytes]], tmp_path: Path) -> None:
    repo, marker, files = hostile_repo
    # the zip files were read as torch checkpoints (tensors found), the raw pickles stored opaque
    for name in files:
        pointer = git(repo, "cat-file", "-p", f"HEAD:{name}")
        assert pointer.startswith("coral-pointer 2\n")
        fmt = pointer.splitlines()[1].split()[2]
        assert fmt == ("torch-zip" if name.startswith("zip_") else "opaque"), (name, fmt)
    for name in files:
        (repo / name).unlink()
    git(repo, "checkout", "--", ".")
    for name, blob in files.items():
        assert (repo / name).read_bytes() == blob
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    coral(clone, "init")
    git(clone, "checkout", "-f", "HEAD")
    assert not marker.exists()


def test_diff_log_show_stats_never_execute(hostile_repo: tuple[Path, Path, dict[str, bytes]]) -> None:
    repo, marker, files = hostile_repo
    # a few files change (each git diff of a model runs one diff-driver process: keep it short)
    changed = ["zip_os_system.pt", "zip_builtins_eval.pt", "zip_subprocess_popen.pt", "legacy_os_system.pt"]
    for i, name in enumerate(changed):
        if name.startswith("zip_"):
            (repo / name).write_bytes(torch_zip(payloads(marker)[name[4:-3]], 100 + i))
        else:
            (repo / name).write_bytes(files[name] + b"\x00")
    git(repo, "diff")
    git(repo, "diff", "--stat")
    git(repo, "commit", "-qm", "v2", *changed)
    git(repo, "log", "-p", "-1")
    ran = []
    for args in (["diff", "HEAD~1", "HEAD"], ["log", "zip_os_system.pt"], ["stats"], ["fsck"], ["show", "HEAD:zip_os_system.pt"]):
        coral(repo, *args, check=False)
        ran.append(args[0])
    assert not marker.exists(), f"executed by one of: git diff/log, git coral {ran}"


def test_merge_never_executes(hostile_repo: tuple[Path, Path, dict[str, bytes]]) -> None:
    repo, marker, files = hostile_repo
    names = [n for n in files if n.startswith("zip_")][:3] + [n for n in files if n.startswith("legacy_")][:2]
    git(repo, "checkout", "-qb", "side")
    for i, name in enumerate(names):
        blob = torch_zip(payloads(marker)[name.split("_", 1)[1][:-3]], 200 + i) if name.startswith("zip_") else files[name] + b"side"
        (repo / name).write_bytes(blob)
    git(repo, "commit", "-qam", "side")
    git(repo, "checkout", "-q", "main")
    for i, name in enumerate(names):
        blob = torch_zip(payloads(marker)[name.split("_", 1)[1][:-3]], 300 + i) if name.startswith("zip_") else files[name] + b"main"
        (repo / name).write_bytes(blob)
    git(repo, "commit", "-qam", "main")
    git(repo, "merge", "side", "-m", "merge", check=False)  # conflicts are fine; execution is not
    git(repo, "merge", "--abort", check=False)
    assert not marker.exists()


def test_python_api_never_executes(hostile_repo: tuple[Path, Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    repo, marker, files = hostile_repo
    from coral_git.formats import registry, torchzip

    for name, blob in files.items():
        registry.detect(memoryview(blob))
        if name.startswith("zip_"):
            refs, _ = torchzip.read_tensor_refs(memoryview(blob))
            assert {r.name for r in refs} >= {"w", "b"}
    try:
        from coral_git.api import model as api
    except ImportError:  # the API module is not committed yet
        api = None
    if api is not None:
        monkeypatch.chdir(repo)
        for name in files:
            try:
                mf = api.open(name, "HEAD", repo=repo)
                for key in list(mf)[:4]:
                    mf[key]
            except Exception as exc:  # refusing is fine, executing is not
                assert "PWNED" not in str(exc)
            if name.startswith("zip_"):
                loaded = api.load_torch(name, "HEAD", repo=repo)
                assert {"w", "b"} <= set(loaded)
    assert not marker.exists()


def test_marker_control_detects_execution(tmp_path: Path) -> None:
    """The control itself: it reports a dead payload as dead and a live one as live."""
    marker = tmp_path / "PWNED"
    _assert_live([legacy_pickle(payloads(marker)["os_system"])], marker, tmp_path)
    with pytest.raises(AssertionError, match="not live"):
        _assert_live([pickle.dumps({"harmless": 1})], marker, tmp_path)
