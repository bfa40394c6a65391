"""Which strategy merges which tensor: git config, the ``coral-merge`` gitattribute and CORAL_MERGE_* variables."""

from __future__ import annotations

import os

from ..errors import UsageError
from ..git.repo import Repo, git
from .model import MergeSettings

ENV_STRATEGY = "CORAL_MERGE_STRATEGY"
ENV_TENSOR_STRATEGY = "CORAL_MERGE_TENSOR_STRATEGY"
ATTRIBUTE = "coral-merge"
PARAMS = {  # parameter → (git config key, environment variable)
    "alpha": ("coral.merge.alpha", "CORAL_MERGE_ALPHA"),
    "lambda": ("coral.merge.lambda", "CORAL_MERGE_LAMBDA"),
    "density": ("coral.merge.tiesDensity", "CORAL_MERGE_TIES_DENSITY"),
}





# ---------------------------------------------------------------------------------------------
# settings from git config, gitattributes and the environment
# ---------------------------------------------------------------------------------------------


def parse_rules(text: str, where: str) -> list[tuple[str, str]]:
    """``"head.*=theirs;*=average"`` → ``[("head.*", "theirs"), ("*", "average")]``."""
    rules = []
    for item in text.replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        glob, sep, spec = item.rpartition("=")
        if not sep or not glob.strip() or not spec.strip():
            raise UsageError(f"{where}: {item!r} is not GLOB=STRATEGY")
        rules.append((glob.strip(), spec.strip()))
    return rules


def path_attribute(repo: Repo, path: str) -> str | None:
    """The value of the ``coral-merge`` gitattribute for ``path``, if it has one."""
    out = git("check-attr", "-z", ATTRIBUTE, "--", path, cwd=repo.worktree or repo.git_dir, check=False)
    parts = out.split("\0")
    value = parts[2] if len(parts) >= 3 else "unspecified"
    return None if value in ("unspecified", "set", "unset", "") else value


def load_settings(repo: Repo, path: str, env: dict[str, str] | None = None) -> MergeSettings:
    """The strategy for ``path``: env ``CORAL_MERGE_STRATEGY``, else the ``coral-merge``
    gitattribute, else ``coral.merge.strategy``, else ``conflict``; per-tensor rules from env
    ``CORAL_MERGE_TENSOR_STRATEGY`` first, then every ``coral.merge.tensorStrategy`` value.
    """
    env = os.environ if env is None else env
    strategy = env.get(ENV_STRATEGY) or path_attribute(repo, path) or repo.config.get("coral.merge.strategy") or "conflict"
    rules = parse_rules(env.get(ENV_TENSOR_STRATEGY, ""), ENV_TENSOR_STRATEGY)
    cwd = repo.worktree or repo.git_dir
    for value in git("config", "--get-all", "coral.merge.tensorStrategy", cwd=cwd, check=False).splitlines():
        rules += parse_rules(value, "coral.merge.tensorStrategy")
    params: dict[str, float] = {}
    for name, (key, var) in PARAMS.items():
        raw = env.get(var) or repo.config.get(key.lower())
        if raw is None:
            continue
        try:
            params[name] = float(raw)
        except ValueError:
            raise UsageError(f"{key} = {raw!r} is not a number; fix it with 'git config {key} <number>'") from None
    settings = MergeSettings(strategy.strip(), tuple(rules), params)
    settings.check()
    return settings
