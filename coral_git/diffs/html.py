"""A diff as one self-contained HTML page: per-tensor bars and a heatmap of relative change, grouped by
layer; and a layer × commit heatmap of a file's history. No scripts, fonts or images from the network:
inline CSS and inline SVG only, so the page opens anywhere (and in a headless browser for tests)."""

from __future__ import annotations

import html
import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from .tensordiff import FileDiff, TensorDiff

CSS = """
body{font:13px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 6px} .sub{color:#5b6670;margin-bottom:14px}
table{border-collapse:collapse;width:100%;margin-bottom:8px} th,td{padding:3px 8px;text-align:left;white-space:nowrap}
th{font-weight:600;border-bottom:2px solid #d0d7de;position:sticky;top:0;background:#fff}
tr.layer td{background:#f3f5f7;font-weight:600;border-top:1px solid #d0d7de}
td.name{font-family:ui-monospace,Menlo,Consolas,monospace;padding-left:22px} td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:9px;padding:0 7px;font-size:11px;color:#fff}
.added{background:#1a7f37}.removed{background:#cf222e}.modified{background:#6e7781}.renamed{background:#8250df}
.reshaped,.retyped{background:#bc4c00} .flag{color:#bc4c00;font-weight:600}
.bar{width:160px} .legend{display:flex;gap:18px;color:#5b6670;margin:6px 0 12px;align-items:center}
.hm{width:auto} .hm td.cell{width:34px;height:20px;padding:0;border:1px solid #fff} .hm th.c{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:400;font-size:11px}
"""

LOG_LO, LOG_HI = -8.0, 0.0  # relative change mapped on a log10 scale from 1e-8 (pale) to 1 (dark)


def layer_of(name: str) -> str:
    """``encoder.layers.3.attn.q.weight`` -> ``encoder.layers.3.attn.q``: the group a tensor is shown in."""
    return name.rsplit(".", 1)[0] if "." in name else "(top level)"


def heat(x: float | None) -> str:
    """A colour for a relative change: white (none) through yellow to dark red (‖Δ‖ as large as ‖a‖)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "#eef1f4"
    if x <= 0:
        return "#ffffff"
    t = (min(LOG_HI, max(LOG_LO, math.log10(x))) - LOG_LO) / (LOG_HI - LOG_LO)
    hue = 55 - 55 * t
    light = 92 - 57 * t
    return f"hsl({hue:.0f},90%,{light:.0f}%)"


def ink(x: float | None) -> str:
    """Text colour readable on ``heat(x)``."""
    f = _log_frac(x) if x is not None else None
    return "#fff" if f is not None and f > 0.6 else "#1d232a"


def _bar(frac: float | None, colour: str, label: str) -> str:
    if frac is None or (isinstance(frac, float) and math.isnan(frac)):
        return '<td class="bar">-</td>'
    w = max(0.0, min(1.0, frac)) * 150
    return (
        f'<td class="bar"><svg width="160" height="14" role="img" aria-label="{html.escape(label)}">'
        f'<rect x="0" y="2" width="150" height="10" fill="#eef1f4"/>'
        f'<rect x="0" y="2" width="{w:.1f}" height="10" fill="{colour}"/></svg> {html.escape(label)}</td>'
    )


def _log_frac(x: float | None) -> float | None:
    if x is None or math.isnan(x):
        return None
    if x <= 0:
        return 0.0
    return (min(LOG_HI, max(LOG_LO, math.log10(x))) - LOG_LO) / (LOG_HI - LOG_LO)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else ("nan" if math.isnan(x) else format(x, spec))


def _shape(s: Any) -> str:
    return "-" if s is None else "[" + ",".join(map(str, s)) + "]"


def _row(t: TensorDiff, max_abs_top: float) -> str:
    leaf = t.name.rsplit(".", 1)[-1] if "." in t.name else t.name
    dtype = html.escape(t.new_dtype or t.old_dtype or "")
    if t.old_dtype and t.new_dtype and t.old_dtype != t.new_dtype:
        dtype = f'<span class="flag">{html.escape(t.old_dtype)} → {html.escape(t.new_dtype)}</span>'
    shape = _shape(t.new_shape if t.new_shape is not None else t.old_shape)
    if t.old_shape is not None and t.new_shape is not None and tuple(t.old_shape) != tuple(t.new_shape):
        shape = f'<span class="flag">{_shape(t.old_shape)} → {_shape(t.new_shape)}</span>'
    rel = t.rel_change
    maxf = None if t.max_abs is None or math.isnan(t.max_abs) or max_abs_top <= 0 else t.max_abs / max_abs_top
    return (
        f'<tr data-tensor="{html.escape(t.name)}"><td class="name" title="{html.escape(t.name)}">{html.escape(leaf)}</td>'
        f'<td><span class="badge {html.escape(t.status)}">{html.escape(t.status)}</span></td><td>{dtype}</td><td>{shape}</td>'
        f'<td style="background:{heat(rel)};color:{ink(rel)}" class="num">{_fmt(rel, ".2e")}</td>'
        + _bar(_log_frac(rel), heat(rel) if rel else "#d0d7de", _fmt(rel, ".1e"))
        + _bar(t.frac_changed, "#0969da", "-" if t.frac_changed is None else f"{100 * t.frac_changed:.1f}%")
        + _bar(maxf, "#8250df", _fmt(t.max_abs))
        + "</tr>"
    )


def _legend() -> str:
    stops = "".join(f'<span style="background:{heat(10.0**e)};color:{ink(10.0**e)};padding:0 6px">1e{e}</span>' for e in range(-8, 1, 2))
    return f'<div class="legend"><span>relative change ‖Δ‖/‖a‖:</span><span>{stops}</span></div>'


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def render_diff(fds: Iterable[FileDiff], a: str, b: str) -> str:
    """One section per file; tensors grouped by layer, each with its change bars."""
    parts = [f"<h1>coral diff {html.escape(a)} → {html.escape(b)}</h1>", _legend()]
    for fd in fds:
        parts.append(f'<h2>{html.escape(fd.path)}</h2><div class="sub">{_summary(fd)}</div>')
        if fd.bytes is not None:
            parts.append(f"<p>not read as tensors: {fd.bytes.bytes_changed:,} bytes in changed chunks</p>")
            continue
        if not fd.tensors:
            parts.append("<p>no tensor changed" + (" (metadata changed)" if fd.metadata_changed else "") + "</p>")
            continue
        top = max((t.max_abs for t in fd.tensors if t.max_abs is not None and not math.isnan(t.max_abs)), default=0.0)
        groups: OrderedDict[str, list[TensorDiff]] = OrderedDict()
        for t in sorted(fd.tensors, key=lambda t: t.name):
            groups.setdefault(layer_of(t.name), []).append(t)
        parts.append(
            "<table><thead><tr><th>tensor</th><th>status</th><th>dtype</th><th>shape</th><th>‖Δ‖/‖a‖</th>"
            "<th>relative change (log)</th><th>share changed</th><th>max |Δ|</th></tr></thead><tbody>"
        )
        for layer, ts in groups.items():
            parts.append(f'<tr class="layer"><td colspan="8">{html.escape(layer)} ({len(ts)})</td></tr>')
            parts.extend(_row(t, top) for t in ts)
        parts.append("</tbody></table>")
    return page(f"coral diff {a} {b}", "".join(parts))


def _summary(fd: FileDiff) -> str:
    counts: dict[str, int] = {}
    for t in fd.tensors:
        counts[t.status] = counts.get(t.status, 0) + 1
    bits = [f"{n} {s}" for s, n in sorted(counts.items())]
    bits.append(f"{fd.unchanged} unchanged")
    if fd.params_total:
        bits.append(f"{fd.params_changed:,} of {fd.params_total:,} parameters changed")
    return html.escape(", ".join(bits))


def layer_change(fd: FileDiff) -> dict[str, float | None]:
    """Per layer, ‖Δ‖/‖a‖ over all its tensors (None when only chunk-level data is known)."""
    acc: dict[str, list[float]] = {}
    for t in fd.tensors:
        d = acc.setdefault(layer_of(t.name), [0.0, 0.0, 0.0])
        if t.status in ("added", "removed", "reshaped", "retyped"):
            d[2] = 1.0
        elif t.delta_norm is not None and t.old_norm is not None and not math.isnan(t.delta_norm):
            d[0] += t.delta_norm**2
            d[1] += t.old_norm**2
        else:
            d[2] = max(d[2], float("nan"))
    out: dict[str, float | None] = {}
    for layer, (dd, aa, flag) in acc.items():
        if flag == 1.0:
            out[layer] = 1.0
        elif aa > 0:
            out[layer] = math.sqrt(dd / aa)
        else:
            out[layer] = None if dd == 0 else 1.0
    return out


def render_history(path: str, entries: list[dict[str, Any]]) -> str:
    """A layer × commit heatmap (oldest commit left) of relative change, one cell per layer and commit."""
    cols = list(reversed(entries))
    per = [layer_change(e["diff"]) for e in cols]
    layers: list[str] = sorted({layer for p in per for layer in p})
    parts = [f"<h1>coral log {html.escape(path)}</h1>", f'<div class="sub">{len(cols)} commit(s), {len(layers)} layer(s); oldest left</div>', _legend()]
    parts.append('<table class="hm"><thead><tr><th>layer</th>')
    for e in cols:
        parts.append(f'<th class="c" title="{html.escape(e["subject"])}">{html.escape(e["commit"][:8])} {html.escape(e["subject"][:24])}</th>')
    parts.append("</tr></thead><tbody>")
    for layer in layers:
        parts.append(f'<tr data-layer="{html.escape(layer)}"><td class="name">{html.escape(layer)}</td>')
        for e, p in zip(cols, per, strict=True):
            v = p.get(layer, 0.0)
            tip = f"{layer} @ {e['commit'][:8]}: " + ("unchanged" if v == 0.0 else "changed" if v is None else f"{v:.2e}")
            parts.append(f'<td class="cell" style="background:{heat(v)}" title="{html.escape(tip)}"></td>')
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return page(f"coral log {path}", "".join(parts))
