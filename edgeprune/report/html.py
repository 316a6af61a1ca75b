"""report.html: one self-contained file (inline CSS, plots as inline SVG), readable offline.

Layout: the budget verdict first, then what was built (dense vs compact), the artifacts
table (size, metric, latency measured and predicted, memory), and the plots. Every
latency figure says whether it was measured (where, how many processes x runs) or
predicted (by which model).
"""

from __future__ import annotations

import html
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .rounds import rounds_section  # noqa: E402
from .svg import figure_svg  # noqa: E402

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.3rem}
.sub{color:#667;margin-top:0}
.verdict{padding:1rem 1.4rem;border-radius:10px;font-size:1.15rem;margin:1rem 0}
.pass{background:#e6f6ea;border:1px solid #7cc493}.fail{background:#fdecea;border:1px solid #e08a80}
.unknown{background:#f3f3f6;border:1px solid #ccd}
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.92rem}
th,td{border-bottom:1px solid #e4e6ee;padding:.35rem .5rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f7fb}
.ok{color:#17803d;font-weight:600}.bad{color:#c0392b;font-weight:600}
.note{color:#667;font-size:.85rem}.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
figure{margin:0}figure svg{max-width:100%;height:auto}figcaption{color:#667;font-size:.82rem}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:.8rem}
.card{background:#f6f7fb;border-radius:8px;padding:.7rem .9rem}.card b{display:block;font-size:1.3rem}
"""


def _fmt(v, spec=".2f", unit=""):
    if v is None:
        return "—"
    if isinstance(v, (int,)) and spec == ".2f":
        return f"{v:,}{unit}"
    try:
        return f"{v:{spec}}{unit}"
    except (TypeError, ValueError):
        return html.escape(str(v))


def _sig(v, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, no exponent for everyday magnitudes ("—" for None)."""
    if v is None:
        return "—"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if v == 0:
        return "0"
    v = float(f"{v:.{digits}g}")  # round first: 9.9995 is "10.0", not "10.00"
    mag = math.floor(math.log10(abs(v)))
    if -4 <= mag < 6:
        return f"{v:.{max(digits - 1 - mag, 0)}f}"
    return f"{v:.{digits - 1}e}"


def _ms(v) -> str:
    """A latency in ms with 3 significant digits, in µs below 0.1 ms (a few µs would read 0.004 ms)."""
    if v is None:
        return "—"
    if not isinstance(v, (int, float)) or isinstance(v, bool):  # a device's reply: shown escaped, never as HTML
        return html.escape(str(v))
    return f"{_sig(v * 1e3)} µs" if abs(v) < 0.1 else f"{_sig(v)} ms"


def _plot_widths(report) -> str | None:
    widths = (report.get("method") or {}).get("widths") or {}
    if not widths:
        return None
    names = list(widths)
    labels = (report["model"].get("group_labels") or {})
    before = [widths[n][0] for n in names]
    after = [widths[n][1] for n in names]
    fig, ax = plt.subplots(figsize=(6.2, 3.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], before, 0.4, label="dense", color="#b8c2d9")
    ax.bar([i + 0.2 for i in x], after, 0.4, label="kept", color="#2f6fb3")
    ax.set_xticks(list(x), [labels.get(n, n) for n in names], rotation=30 if len(names) <= 8 else 60,
                  ha="right", fontsize=7)
    ax.set_ylabel("channels")
    ax.set_title("Width per coupled group, before and after pruning", fontsize=10)
    ax.legend(fontsize=8)
    return figure_svg(fig)


def _plot_training(report) -> str | None:
    dense = report["training"]["dense"]
    ft = report["training"]["finetune"]
    if not dense:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 3.2))
    xs = [r["epoch"] for r in dense]
    ax.plot(xs, [r.get("val_metric") for r in dense], "o-", label="dense training", color="#b8c2d9")
    if ft:
        off = len(dense)
        ax.plot([off + r["epoch"] for r in ft], [r.get("val_metric") for r in ft], "o-", label="fine-tune (compact)", color="#2f6fb3")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {report['metric_name']}")
    ax.set_title("Validation metric over training (measured)", fontsize=10)
    ax.legend(fontsize=8)
    return figure_svg(fig)


# A method's history declares its curves (history["plots"]); this file draws whatever is declared:
# {"title": str, "panels": [{"title", "xlabel", "ylabel", "yscale": "linear" | "log",
#   "series": [{"y": key, "x": key, "label", "style", "color", "linewidth",
#               "field": name (y is a list of records: plot record[field]),
#               "per_key": true (y is {name: list}: one line per name), "labels": "groups" (name -> group label)}]}]}
PANEL_KEYS = {"title", "xlabel", "ylabel", "yscale", "series"}
SERIES_KEYS = {"y", "x", "label", "style", "color", "linewidth", "field", "per_key", "labels"}


def check_plots(history: dict) -> list[str]:
    """Problems of a history's plot declaration (empty: drawable). Keys must name lists in the history."""
    decl = history.get("plots")
    if decl is None:
        return []
    if not isinstance(decl, dict) or not isinstance(decl.get("panels"), list):
        return ["history['plots'] must be {'title': ..., 'panels': [...]}"]
    out = []
    for i, p in enumerate(decl["panels"]):
        if not isinstance(p, dict) or set(p) - PANEL_KEYS or not isinstance(p.get("series"), list):
            out.append(f"panel {i}: keys must be among {sorted(PANEL_KEYS)}, with a 'series' list")
            continue
        if p.get("yscale", "linear") not in ("linear", "log"):
            out.append(f"panel {i}: yscale must be 'linear' or 'log'")
        for j, sr in enumerate(p["series"]):
            if not isinstance(sr, dict) or "y" not in sr or set(sr) - SERIES_KEYS:
                out.append(f"panel {i} series {j}: needs 'y'; keys among {sorted(SERIES_KEYS)}")
                continue
            for k in ("y", "x"):
                if k in sr and sr[k] not in history:
                    out.append(f"panel {i} series {j}: {k}={sr[k]!r} is not a key of the history")
    return out


def _series(h: dict, s: dict, labels: dict) -> list[tuple]:
    """``[(label, xs, ys)]`` of one declared series; nothing where its data is missing or x and y differ in length."""
    y = h.get(s["y"])
    if s.get("per_key"):
        names = labels if s.get("labels") == "groups" else {}
        return [(names.get(k, k), range(1, len(v) + 1), v) for k, v in (y or {}).items() if v]
    if not isinstance(y, list) or not y:
        return []
    if s.get("field"):
        y = [r.get(s["field"]) if isinstance(r, dict) else None for r in y]
    xs = h.get(s["x"]) if s.get("x") else None
    if not xs:
        xs = range(len(y))
    elif len(xs) != len(y):
        return []
    return [(s.get("label"), xs, y)]


def _plot_method(report) -> str | None:
    """The method's own curves, as its history declares them (``history["plots"]``; see :func:`check_plots`)."""
    h = (report.get("method") or {}).get("history") or {}
    if not isinstance(h, dict) or check_plots(h) or not h.get("plots"):
        return None
    labels = report["model"].get("group_labels") or {}
    panels = [(p, [ln for s in p["series"] for ln in _series(h, s, labels)]) for p in h["plots"]["panels"]]
    panels = [(p, lines) for p, lines in panels if lines]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.2, 4.13 * len(panels)), 3.0), squeeze=False)
    for ax, (p, lines) in zip(axes[0], panels):
        specs = [s for s in p["series"] for _ in _series(h, s, labels)]
        for (label, xs, ys), s in zip(lines, specs):
            kw = {k: s[k] for k in ("color", "linewidth") if k in s}
            ax.plot(list(xs), ys, s.get("style", "-"), label=label, **kw)
        if p.get("yscale") == "log":
            ax.set_yscale("log")
        ax.set_xlabel(p.get("xlabel", ""))
        if p.get("ylabel"):
            ax.set_ylabel(p["ylabel"])
        ax.set_title(p.get("title", ""), fontsize=9)
        named = [ln for ln in lines if ln[0]]
        if 0 < len(named) <= 8:
            ax.legend(fontsize=7 if len(named) <= 2 else 6)
    fig.suptitle(h["plots"].get("title") or f"{report['method'].get('method', '')} (measured during the prune stage)",
                 fontsize=10)
    return figure_svg(fig)


_MARKERS = {"onnx": "s", "onnx-int8": "D", "tflite": "^", "tflite-int8": "v"}


def _plot_tradeoff(report) -> str | None:
    """Test metric vs MACs: dense, compact (before / after fine-tuning, with the method), each artifact (its
    own marker, named in the legend) and other runs of the same model and dataset next to this run folder."""
    m = report["model"]
    if m["compact"]["macs"] is None:
        return None
    method = (report.get("method") or {}).get("method", "")
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    ax.scatter([m["dense"]["macs"] / 1e6], [m["dense"]["test_metric"]], s=70, label="dense", color="#8a94ad")
    cx = m["compact"]["macs"] / 1e6
    if m["compact"]["test_metric_before_finetune"] is not None:
        ax.scatter([cx], [m["compact"]["test_metric_before_finetune"]], s=60, marker="x",
                   label=f"{method}, before fine-tune", color="#d35400")
    if m["compact"]["test_metric"] is not None:
        ax.scatter([cx], [m["compact"]["test_metric"]], s=70, label=f"{method}, fine-tuned (this run)", color="#2f6fb3")
    arts = [a for a in report["artifacts"] if a.get("ok") and a.get("metric") is not None]
    span = abs(m["dense"]["macs"] / 1e6 - cx) or cx or 1.0
    for i, a in enumerate(arts):  # side by side right of the compact point, so equal metrics stay visible
        ax.scatter([cx + span * 0.05 * (i + 1)], [a["metric"]], s=24, marker=_MARKERS.get(a["format"], "o"),
                   facecolors="none", edgecolors="#333", linewidths=0.8, label=f"artifact {a['format']}")
    sib = [r for r in report.get("sibling_runs") or [] if r.get("macs") and r.get("test_metric") is not None]
    if sib:
        ax.scatter([r["macs"] / 1e6 for r in sib], [r["test_metric"] for r in sib], s=40, color="#b5b5b5",
                   label="other runs (same model and data)")
        for r in sib:
            ax.annotate(r.get("method") or r["run"], (r["macs"] / 1e6, r["test_metric"]), fontsize=6, color="#777",
                        xytext=(4, -8), textcoords="offset points")
    ax.set_xlabel("MACs (millions, counted on the model)")
    ax.set_ylabel(f"test {report['metric_name']}")
    ax.set_title(f"{report['metric_name'].capitalize()} vs compute (measured on the test split)", fontsize=10)
    ax.legend(fontsize=6.5, loc="best", framealpha=0.85)
    return figure_svg(fig)


def _plot_latency(report) -> str | None:
    per = report.get("latency_per_target") or {}
    rows = []
    for tname, arts in per.items():
        for fmt, lat in arts.items():
            if "predicted" in lat:
                rows.append((f"{tname}\n{fmt}", lat["predicted"]["latency_ms"], "predicted"))
            if "device" in lat:
                rows.append((f"{tname}\n{fmt}", lat["device"]["p50_ms"], "measured on device"))
    host = [(f"host\n{a['format']}", a["latency"]["host"]["p50_ms"], "measured on host")
            for a in report["artifacts"] if a.get("latency", {}).get("host")]
    rows = host + rows
    if not rows:
        return None
    colors = {"measured on host": "#8a94ad", "predicted": "#e3a04f", "measured on device": "#2f6fb3"}
    fig, ax = plt.subplots(figsize=(6.2, max(2.4, 0.32 * len(rows) + 1)))
    ys = range(len(rows))
    ax.barh(list(ys), [r[1] for r in rows], color=[colors[r[2]] for r in rows])
    ax.set_yticks(list(ys), [r[0].replace("\n", " · ") for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("latency p50, ms (batch 1)")
    ax.set_title("Latency per target and artifact", fontsize=10)
    for label, c in colors.items():
        ax.barh([0], [0], color=c, label=label)
    ax.legend(fontsize=7, loc="lower right")
    return figure_svg(fig)


def _verdict(report) -> str:
    b = report.get("budget")
    t = report["target"]
    if not b:
        return f'<div class="verdict unknown">Budget for <b>{html.escape(t["title"])}</b>: not checked yet.</div>'
    cls = "pass" if b["passed"] else "fail"
    word = "PASSES" if b["passed"] else "FAILS"
    n_fail = sum(1 for line in b.get("lines", []) if line["passed"] is False)
    n_none = sum(1 for line in b.get("lines", []) if line["passed"] is None)
    extra = "" if b["passed"] else (f" — {n_fail} budget line(s) missed" + (f", {n_none} without evidence" if n_none else ""))
    art = html.escape(str(b.get("artifact")))
    return (f'<div class="verdict {cls}">The model <b>{word}</b> the budget of <b>{html.escape(t["title"])}</b> '
            f"with artifact <code>{art}</code>{extra}.</div>")


def _budget_table(report) -> str:
    b = report.get("budget") or {}
    lines = b.get("lines") or []
    if not lines:
        return '<p class="note">No budget lines.</p>'
    rows = []
    for line in lines:
        mark = {True: '<span class="ok">pass</span>', False: '<span class="bad">fail</span>'}.get(
            line["passed"], '<span class="bad">no evidence</span>')
        src = str(line.get("source") or "") + (f" ({line['where']})" if line.get("where") else "")
        rows.append(
            f"<tr><td>{html.escape(line['name'])}</td><td>{_sig(line.get('value'))}</td>"
            f"<td>{_sig(line.get('budget'))}</td><td>{mark}</td><td>{_fmt(line.get('margin'), '+.0%')}</td>"
            f"<td style='text-align:left'>{html.escape(src)}</td>"
            f"<td style='text-align:left'>{html.escape(str(line.get('advice') or ''))}</td></tr>"
        )
    return ("<table><tr><th>line</th><th>value</th><th>budget</th><th>verdict</th><th>margin</th><th>source</th>"
            "<th>advice</th></tr>" + "".join(rows) + "</table>")


def _e(v) -> str:
    """Any value from a file or a device, as HTML text."""
    return html.escape(str(v))


def _mb(v) -> str:
    return "—" if v is None else f"{_sig(v)}"


def _artifact_table(report) -> str:
    """Per artifact: size, metric, latency (host measured, target predicted, device measured), memory."""
    rows = []
    mname = report["metric_name"]
    tname = report["target"]["name"]
    lat = [a.get("latency", {}) for a in report["artifacts"]]
    has_dev = any(x.get("device") for x in lat)
    for a, la in zip(report["artifacts"], lat):
        host, pred, dev = la.get("host") or {}, la.get("predicted") or {}, la.get("device") or {}
        status = '<span class="ok">ok</span>' if a.get("ok") else f'<span class="bad">failed</span> {html.escape(str(a.get("error")))}'
        if a.get("ok") and a.get("within_tolerance") is False:
            status = '<span class="bad">ok, INT8 over tolerance</span>'
        mem = f"{_mb(host.get('model_footprint_mb'))} / {_mb(pred.get('peak_memory_mb'))}"
        cells = [html.escape(a["format"]), status, _sig((a.get("size_bytes") or 0) / 1024), _fmt(a.get("metric")),
                 _fmt(a.get("metric_drop"), "+.2f"), _ms(host.get("p50_ms")), _ms(host.get("p90_ms")),
                 _ms(pred.get("latency_ms")) + (f" {html.escape(pred['band_label'])}" if pred.get("band_label") else ""),
                 _ms(pred.get("p90_ms"))]
        if has_dev:
            cells += [_ms(dev.get("p50_ms")), _ms(dev.get("p90_ms"))]
            mem += f" / {_mb(dev.get('model_footprint_mb'))}"
        cells.append(mem)
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ["artifact", "status", "size KiB", mname, "drop vs torch", "host p50 (meas.)", "host p90 (meas.)",
            f"{tname} p50 (pred.)", f"{tname} p90 (pred.)"]
    if has_dev:
        head += ["device p50 (meas.)", "device p90 (meas.)"]
    head.append("model memory MB: host meas. / " + tname + " pred." + (" / device meas." if has_dev else ""))
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
    return table + "".join(f'<p class="note">{n}</p>' for n in _latency_notes(report, lat, has_dev))


def _outputs_table(report) -> str:
    """A model with several outputs: each output's shape and its parity with torch in every artifact."""
    arts = [a for a in report["artifacts"] if len(a.get("outputs") or []) > 1]
    if not arts:
        return ""
    names = [(o["name"], o["shape"]) for o in arts[0]["outputs"]]
    head = ["output", "shape per sample"] + [f"{a['format']} rel. diff" for a in arts]
    rows = []
    for i, (name, shape) in enumerate(names):
        cells = [html.escape(name) + (" (task output)" if i == 0 else ""), html.escape(str(shape))]
        cells += [_fmt(a["outputs"][i].get("rel_diff"), ".1e") if i < len(a["outputs"]) else "—" for a in arts]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note = ("Every output is exported and compared with torch on the whole test split, each on its own scale "
            "(max |artifact − torch| / max |torch|); the metric is computed on the first.")
    return ("<h3>Outputs</h3><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join(rows) + f'</table><p class="note">{note}</p>')


def _latency_notes(report, lat: list, has_dev: bool) -> list:
    """Where every figure of the artifact table comes from (measured where, how often; predicted by what)."""
    notes = []
    host = next((x["host"] for x in lat if x.get("host")), None)
    pred = next((x["predicted"] for x in lat if x.get("predicted")), None)
    dev = next((x["device"] for x in lat if x.get("device")), None)
    if host:
        mach = host.get("machine") or {}
        if isinstance(mach, dict):
            mach = f"{mach.get('cpu', 'host')}, {mach.get('cores', '?')} cores, {mach.get('platform', '')}"
        notes.append(f"Host figures: measured on this machine ({html.escape(str(mach))}), median of "
                     f"{_e(host.get('repeats'))} fresh processes × {_e(host.get('runs'))} timed runs, "
                     f"{_e(host.get('threads'))} thread(s), batch 1. Model memory = peak RSS minus the runtime's import "
                     f"footprint (measured separately: {_sig(host.get('runtime_footprint_mb'))} MB).")
    if pred:
        notes.append(f"{html.escape(report['target']['title'])} figures: predicted by {html.escape(str(pred.get('model')))}"
                     f" (see Cost model below); p90 = {html.escape(str(pred.get('p90_how') or 'not predicted'))}. "
                     f"Memory: {html.escape(str(pred.get('peak_memory_how') or ''))}. "
                     f"<b>Uncertainty: {html.escape(str(pred.get('uncertainty') or 'unknown'))}.</b>")
    if dev:
        notes.append(f"Device figures: measured on {html.escape(str(dev.get('where')))}, "
                     f"{_e(dev.get('repeats') or 1)} process(es) × {_e(dev.get('runs'))} timed runs, "
                     f"{_e(dev.get('threads'))} thread(s)"
                     + (f"; p90 = {html.escape(str(dev['p90_from']))}" if dev.get("p90_from") else "") + ".")
    elif pred:
        notes.append(f"Nothing was measured on a {html.escape(report['target']['title'])}: the target columns are "
                     "predictions (measure with <code>edgeprune bench RUN --remote user@host</code> or "
                     "<code>--adb</code>).")
    return notes


def _cost_model_note(report) -> str:
    """Where the cost model's calibration comes from and how far to trust it."""
    cm = report.get("cost_model")
    if not cm:
        return '<p class="note">No cost-model prediction in this run.</p>'
    errs = cm.get("host_error_median_abs_pct") or {}
    err = ", ".join(f"{html.escape(k)} {v:.0f}%" for k, v in sorted(errs.items())) or "not measured"
    kb = {k: v for k, v in (cm.get("kernel_error_band_pct") or {}).items() if v.get("median") is not None}
    if kb:
        err = (f"{err}; kernel-level predictor (used for host figures), absolute error on held-out architectures "
               "(benchmarks/costmodel/predictor.md), median / 90% band: "
               + ", ".join(f"{html.escape(k)} {v['median']:.0f}% / ±{v['p90']:.0f}%" for k, v in sorted(kb.items())))
    here = ("this host" if cm.get("calibration_matches_this_host") else
            "<b>another host, not this one</b> (run <code>edgeprune calibrate --host</code> to calibrate this one)")
    return (f'<p class="note">Cost model {html.escape(str(cm.get("model")))}: calibrated on '
            f"{html.escape(str(cm.get('calibrated_on')))} ({here}; {html.escape(str(cm.get('calibration_file')))}). "
            f"Host prediction error, median absolute over the built-in models, leave-one-model-out: {err} "
            "(benchmarks/costmodel/results.md). Target predictions: "
            f"{html.escape(str(cm.get('target_how') or ''))}. <b>{html.escape(str(cm.get('uncertainty') or ''))}.</b></p>")


def _limit_section(report) -> str:
    """The build guard's prediction next to what the build achieved, and what it means."""
    lim = report.get("pruning_limit")
    if not lim:
        return ""
    if lim.get("s_star") is None:
        return f'<h2>Pruning limit</h2><p class="note">{html.escape(lim.get("note") or "not estimated")}</p>'
    ach = lim.get("achieved") or {}
    verdict = ("beyond the predicted limit" if lim.get("beyond") else "within the predicted limit")
    st = lim.get("settings") or {}
    how = f"{st.get('steps', '?')} Lanczos steps × {st.get('vectors', '?')} vectors over {st.get('samples', '?')} training samples"
    return f"""<h2>Pruning limit</h2>
<table><tr><th></th><th>fraction removed</th></tr>
<tr><td>predicted limit s* (one-shot, unstructured weights, no fine-tuning)</td><td>{_fmt(lim['s_star'], '.1%')}</td></tr>
<tr><td>requested by the target (MACs)</td><td>{_fmt(lim.get('requested_removal'), '.1%')} ({verdict})</td></tr>
<tr><td>achieved by this build (MACs / parameters)</td><td>{_fmt(ach.get('macs_removed'), '.1%')} / {_fmt(ach.get('params_removed'), '.1%')}</td></tr>
<tr><td>achieved {html.escape(report['metric_name'])} drop after fine-tuning</td><td>{_fmt(ach.get('metric_drop'))}</td></tr></table>
<p class="note">Predicted, not measured: s* (Zhang et al., NeurIPS 2024) is the fraction of individual weights that
one-shot global magnitude pruning can zero, without fine-tuning, before the training loss leaves its mini-batch noise
(&epsilon; = {_fmt(lim.get('epsilon'), '.3g')}; estimated in {_fmt(lim.get('seconds'), '.1f')} s from the Hessian spectrum:
{html.escape(how)}). This build removes whole channels and then fine-tunes: removing channels is coarser than removing
single weights, while fine-tuning recovers what one-shot pruning loses, so s* is a warning sign, not a hard ceiling.
Measured on the quickstart digits CNN (docs/limit.md, two seeds): s* was 0.65&ndash;0.77; channel pruning without
fine-tuning lost more than 1 point at 32&ndash;50 % of the MACs, with the build's fine-tuning it stayed within 1 point up
to 82&ndash;95 %. Beyond s* the build relies on fine-tuning; s* is conservative for it.</p>"""


def render_html(report: dict, extra_html: str = "") -> str:
    """``extra_html``: trusted figures made by the report stage itself (e.g. the reconstruction grid)."""
    m = report["model"]
    mname = report["metric_name"]
    dense, comp = m["dense"], m["compact"]
    ver = comp.get("verification") or {}
    plots = [p for p in (_plot_widths(report), _plot_training(report), _plot_tradeoff(report), _plot_latency(report)) if p]
    figs = "".join(f"<figure>{p}</figure>" for p in plots)
    sib_note = ("" if report.get("sibling_runs") else
                '<p class="note">Accuracy vs compute: no other run of this model and dataset in the parent folder, '
                "so no other methods are overlaid.</p>")
    wide = _plot_method(report)
    if wide:
        figs += f'</div><div><figure class="wide">{wide}</figure>'  # full width below the grid
    if extra_html:
        figs += f"</div><div>{extra_html}"
    method = report.get("method") or {}
    cards = [
        ("MACs kept", _fmt((comp["macs"] or 0) / dense["macs"] if dense["macs"] else None, ".1%")),
        ("params kept", _fmt((comp["params"] or 0) / dense["params"] if dense["params"] else None, ".1%")),
        (f"dense {mname}", _fmt(dense["test_metric"])),
        (f"compact {mname}", _fmt(comp.get("test_metric"))),
    ]
    card_html = "".join(f'<div class="card">{html.escape(k)}<b>{v}</b></div>' for k, v in cards)
    stage_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v, '.1f')}</td></tr>" for k, v in report["stage_seconds"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeprune report: {html.escape(report['run'])}</title>
<style>{CSS}</style></head><body>
<h1>edgeprune report</h1>
<p class="sub">run <code>{html.escape(report['run'])}</code> · model <code>{html.escape(m['arch']['model'])}</code> on
<code>{html.escape(report['dataset']['name'])}</code> · method <code>{html.escape(str(method.get('method', '')))}</code> ·
target <code>{html.escape(report['target']['name'])}</code> · generated {html.escape(report['generated'])} by edgeprune {html.escape(report['edgeprune_version'])}</p>
{_verdict(report)}
<div class="cards">{card_html}</div>
<h2>Budget</h2>{_budget_table(report)}
{rounds_section(report)}
<h2>Model</h2>
<table><tr><th></th><th>parameters</th><th>MACs</th><th>test {mname}</th></tr>
<tr><td>dense</td><td>{dense['params']:,}</td><td>{dense['macs']:,}</td><td>{_fmt(dense['test_metric'])}</td></tr>
<tr><td>compact, before fine-tune</td><td>{_fmt(comp['params'])}</td><td>{_fmt(comp['macs'])}</td><td>{_fmt(comp.get('test_metric_before_finetune'))}</td></tr>
<tr><td>compact, fine-tuned</td><td>{_fmt(comp['params'])}</td><td>{_fmt(comp['macs'])}</td><td>{_fmt(comp.get('test_metric'))}</td></tr></table>
<p class="note">Compaction verified against the masked model on {ver.get('n_inputs', '—')} real test inputs:
relative difference {_fmt(ver.get('rel_diff'), '.1e')} (tolerance {_fmt(ver.get('rel_tol'), '.0e')}).
MACs and parameters are counted on the model, not estimated. {html.escape(method.get('summary', ''))}</p>
{_limit_section(report)}
<h2>Artifacts</h2>{_artifact_table(report)}{_outputs_table(report)}
<h2>Cost model</h2>{_cost_model_note(report)}
<h2>Plots</h2><div class="grid">{figs}</div>{sib_note}
<h2>Stage times</h2><table><tr><th>stage</th><th>seconds</th></tr>{stage_rows}</table>
</body></html>
"""
