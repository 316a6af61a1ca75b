"""The report's pruning-target section: how the target was set (derived from the budget or given) and, after
``build --search``, every round (target, achieved MACs, predicted and host-measured latency, accuracy, verdict)
with a Pareto plot of accuracy against the predicted latency on the target."""

from __future__ import annotations

import html

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .svg import figure_svg  # noqa: E402


def _fmt(v, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def _sig(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def _derivation_note(d: dict | None, target_name: str) -> str:
    if not d:
        return ""
    from ..bench.planning import Derivation

    try:
        sentence = Derivation(**d).sentence(target_name)
    except TypeError:
        return ""
    keeps = ", ".join(f"{k} keep &le; {v:.0%}" for k, v in (d.get("keeps") or {}).items())
    how = ("Derived before training by the cost model from the dense architecture (per operator: compute time "
           "scaled by the kept MACs, memory time by their square root, per-operator overhead unchanged), aiming "
           "at 90% of each budget line" if d.get("source") not in ("given", "profile") else "Given, not derived")
    return (f"<p><b>Pruning target.</b> {html.escape(sentence)}</p><p class=\"note\">{how}"
            f"{': ' + keeps if keeps else ''}. Predicted, not measured.</p>")


def _rows(rounds: list, chosen: int | None) -> str:
    out = []
    for r in rounds:
        verdict = ('<span class="ok">pass</span>' if r["passed"] else
                   f'<span class="bad">fail</span> {html.escape(", ".join(r["failed"]))}')
        mark = " (chosen)" if r["round"] == chosen else ""
        out.append(f"<tr><td>{r['round']}{mark}</td><td>{_fmt(r['target_keep'], '.0%')}</td>"
                   f"<td>{_fmt(r['achieved_keep'], '.1%')}</td><td>{html.escape(str(r.get('artifact')))}</td>"
                   f"<td>{_sig(r.get('predicted_ms'))}</td><td>{_sig(r.get('host_ms'))}</td>"
                   f"<td>{_fmt(r.get('metric'))}</td><td>{verdict}</td>"
                   f"<td style='text-align:left'>{html.escape(str(r.get('decision') or ''))}</td></tr>")
    return "".join(out)


def plot_pareto(search: dict, budget_ms: float | None, dense: tuple | None) -> str | None:
    """Accuracy vs predicted latency on the target, one point per round (the chosen one ringed), the
    Pareto front of the rounds as a line, the latency budget as a vertical line."""
    pts = [r for r in search.get("rounds", []) if r.get("predicted_ms") is not None and r.get("metric") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    front, best = [], -float("inf")
    for r in sorted(pts, key=lambda r: r["predicted_ms"]):
        if r["metric"] > best:
            front.append(r)
            best = r["metric"]
    ax.plot([r["predicted_ms"] for r in front], [r["metric"] for r in front], color="#b5b5b5", lw=1, zorder=1,
            label="Pareto front of the rounds")
    for r in pts:
        ax.scatter([r["predicted_ms"]], [r["metric"]], s=46, zorder=2,
                   color="#2f6fb3" if r["passed"] else "#c0392b")
        ax.annotate(f"r{r['round']} ({r['achieved_keep']:.0%})", (r["predicted_ms"], r["metric"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    chosen = (search.get("verdict") or {}).get("chosen_round")
    for r in pts:
        if r["round"] == chosen:
            ax.scatter([r["predicted_ms"]], [r["metric"]], s=150, facecolors="none", edgecolors="#17803d",
                       linewidths=1.5, zorder=3, label="chosen round")
    if dense and dense[0] is not None and dense[1] is not None:
        ax.scatter([dense[0]], [dense[1]], s=60, marker="s", color="#8a94ad", label="dense (predicted)")
    xmax = max([r["predicted_ms"] for r in pts] + [dense[0] if dense and dense[0] else 0])
    if budget_ms and budget_ms <= 3 * xmax:
        ax.axvline(budget_ms, color="#e3a04f", ls="--", lw=1, label=f"p50 budget {budget_ms:g} ms")
    elif budget_ms:  # far right of every round: say so instead of squashing the rounds into one corner
        ax.plot([], [], color="#e3a04f", ls="--", lw=1, label=f"p50 budget {budget_ms:g} ms (off the chart)")
    ax.scatter([], [], color="#2f6fb3", label="round passes")
    ax.scatter([], [], color="#c0392b", label="round fails")
    ax.set_xlabel("predicted p50 latency on the target, ms (cost model)")
    ax.set_ylabel(f"test {pts[0].get('metric_name') or 'metric'} (measured)")
    ax.set_title("Search rounds: accuracy vs predicted target latency", fontsize=10)
    ax.legend(fontsize=6.5, loc="best", framealpha=0.85)
    return figure_svg(fig)


def rounds_section(report: dict) -> str:
    """HTML for the pruning target and the search rounds ('' when the run has neither record)."""
    d, s = report.get("pruning_target"), report.get("search")
    if not d and not s:
        return ""
    out = ["<h2>Pruning target</h2>", _derivation_note(d, report["target"]["name"])]
    if s:
        v = s.get("verdict") or {}
        status = v.get("status", "running")
        cls = {"passed": "pass", "out-of-reach": "fail", "not-met": "fail"}.get(status, "unknown")
        out.append(f'<div class="verdict {cls}">Search ({html.escape(s.get("objective", ""))}): '
                   f"<b>{html.escape(status)}</b> — {html.escape(str(v.get('sentence', '')))}</div>")
        out.append("<table><tr><th>round</th><th>target MACs</th><th>achieved MACs</th><th>artifact</th>"
                   "<th>predicted ms</th><th>host ms</th><th>" + html.escape(report["metric_name"]) +
                   "</th><th>verdict</th><th>decision</th></tr>" + _rows(s.get("rounds", []), v.get("chosen_round"))
                   + "</table>")
        out.append('<p class="note">Predicted: the cost model on the target profile (unvalidated on the device). '
                   "Host: measured on the build machine (p50, batch 1), not the device. Accuracy: measured on the "
                   "test split after fine-tuning.</p>")
        bud = (report.get("budget") or {}).get("lines") or []
        p50 = next((ln.get("budget") for ln in bud if ln["name"] == "latency_p50_ms"), None)
        dense = ((d or {}).get("dense") or {}).get("latency_ms")
        fig = plot_pareto(s, p50, (dense, report["model"]["dense"].get("test_metric")))
        if fig:
            out.append(f"<figure>{fig}</figure>")
    return "".join(out)
