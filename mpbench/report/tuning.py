"""The report's Tuning section, for suites with ``tune:`` (docs/tuning.md).

A ranking of tuned models is only fair if every row had the same search, so the section
states the budget (trials x epochs) and checks it is equal for every row, loudly when it is
not; then each row's chosen values (``results.csv``'s ``tuned``), its best trial's
validation top-1, the tuning cost beside the final runs' and, per hyperparameter, a
sensitivity figure: every trial's validation top-1 against its value, one colour per family.

It reads stored files only: ``results.csv`` and ``suite.json`` (the search space), and
``tune/<study>/study.json``, which :func:`mpbench.suite.tune.export_study` writes after every
trial (each trial's values, state, validation curve and training time), so a report needs
neither the Optuna storage nor the trial directories. An untuned suite gets no section.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from mpbench.report.formatting import fmt_budget, fmt_duration, md_escape
from mpbench.report.results import ResultSet, read_json
from mpbench.report.summary import budget_key

__all__ = ["load_studies", "is_tuned", "tuning_rows", "budget_problems", "sensitivity_points",
           "tuning_figures", "tuning_section", "save_figure", "FINISHED_STATES"]

#: trial states that spent their share of the budget (study.json's names)
FINISHED_STATES = ("complete", "pruned", "fail")


def load_studies(rs: ResultSet) -> list[dict]:
    """Every ``tune/<study>/study.json`` of the results, in directory order."""
    tune_dir = Path(rs.root) / "tune"
    studies = []
    for path in sorted(tune_dir.glob("*/study.json")) if tune_dir.is_dir() else []:
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("trials"), list):
            studies.append({**data, "dir": path.parent.name})
    return studies


def is_tuned(rs: ResultSet) -> bool:
    return bool(rs.suite.get("tune")) or any(r.get("tuned") for r in rs.rows)


def _space(rs: ResultSet, studies: list[dict]) -> dict:
    """name -> the suite's domain (``{low, high, log}`` or a list); names known only from
    study.json get ``None`` (drawn on a linear axis, or as categories when not numbers)."""
    space = dict(((rs.suite.get("tune") or {}).get("space")) or {})
    for s in studies:
        for name in s.get("space") or []:
            space.setdefault(name, None)
    return space


def _study_for(studies: list[dict], a: dict) -> dict | None:
    for s in studies:
        if s.get("label") == a["label"] and budget_key(s.get("budget_gmacs")) == budget_key(
                a["budget_gmacs"]):
            return s
    return None


def _best(study: dict) -> dict | None:
    """The trial :func:`mpbench.suite.tune.study_outcome` chooses: the highest value, the
    earliest on a tie."""
    done = [t for t in study["trials"] if t.get("state") == "complete" and t.get("value") is not None]
    return max(done, key=lambda t: (t["value"], -t["number"])) if done else None


def tuning_rows(rs: ResultSet, summary: list[dict], studies: list[dict]) -> list[dict]:
    """One record per summary row: its study, chosen values, trial counts and costs."""
    by_id = {r["run_id"]: r for r in rs.rows}
    out = []
    for a in summary:
        runs = [by_id[i] for i in a["run_ids"] if i in by_id]
        done = [r for r in runs if r["status"] == "done"]
        chosen = sorted({r["tuned"] for r in runs if r.get("tuned")})
        study = _study_for(studies, a)
        trials = study["trials"] if study else []
        states = [t.get("state") for t in trials]
        best = _best(study) if study else None
        costs = [r["tune_cost_s"] for r in runs if r.get("tune_cost_s") is not None]
        study_cost = (math.fsum(t.get("train_time_s") or 0.0 for t in trials
                                if t.get("state") in FINISHED_STATES) if study else None)
        out.append({
            "summary": a, "study": study, "label": a["label"], "family": a["family"],
            "budget_gmacs": a["budget_gmacs"], "dataset": a["dataset"],
            # the values the final runs trained with (results.csv); the best trial's before
            "values": json.loads(chosen[0]) if chosen else (dict(best["params"]) if best else None),
            "values_from": "results" if chosen else ("best trial" if best else ""),
            "values_disagree": len(chosen) > 1,
            "trials_planned": study.get("trials_planned") if study else None,
            "epochs": study.get("epochs") if study else None,
            "finished": sum(s in FINISHED_STATES for s in states),
            "complete": states.count("complete"), "pruned": states.count("pruned"),
            "diverged": states.count("fail"), "running": len(states) - sum(
                s in FINISHED_STATES for s in states),
            "best_val_top1": next((r["tune_best_val_top1"] for r in runs
                                   if r.get("tune_best_val_top1") is not None),
                                  best["value"] if best else None),
            "best_trial": best["number"] if best else None,
            "tune_cost_s": costs[0] if costs else study_cost,
            "final_cost_s": math.fsum(r["train_time_s"] for r in done if r["train_time_s"])
            if done else None,
            "final_runs": len(done), "runs": len(runs),
        })
    return out


def budget_problems(rows: list[dict], planned: int | None, epochs: int | None) -> list[str]:
    """Why the rows were not tuned equally (empty when they were): a study with another
    trial count or schedule, one with unfinished trials, a row without trial records."""
    problems = []
    for t in rows:
        where = f"{t['label']} at {fmt_budget(t['budget_gmacs'])} GMACs"
        if t["study"] is None:
            problems.append(f"{where}: no trial records (tune/<study>/study.json)")
            continue
        if planned is not None and t["trials_planned"] != planned:
            problems.append(f"{where}: {t['trials_planned']} trials planned, not {planned}")
        if epochs is not None and t["epochs"] != epochs:
            problems.append(f"{where}: trials of {t['epochs']} epochs, not {epochs}")
        if t["trials_planned"] is not None and t["finished"] < t["trials_planned"]:
            problems.append(f"{where}: {t['finished']} of {t['trials_planned']} trials finished")
        if t["values_disagree"]:
            problems.append(f"{where}: its final runs carry different chosen values")
    return problems


def _fmt_value(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def _fmt_domain(dom) -> str:
    if isinstance(dom, list):
        return "one of " + ", ".join(_fmt_value(v) for v in dom)
    if isinstance(dom, dict):
        return (f"{_fmt_value(dom.get('low'))} … {_fmt_value(dom.get('high'))}"
                + (", log scale" if dom.get("log") else ""))
    return "(range not stored)"


def _trials_text(t: dict) -> str:
    extra = [f"{t[k]} {k}" for k in ("pruned", "diverged", "running") if t[k]]
    return str(t["finished"] + t["running"]) + (f" ({', '.join(extra)})" if extra else "")


def tuning_section(ctx) -> list[str]:
    """``## Tuning``: the budget, the chosen values and costs, the sensitivity figures."""
    rs = ctx.rs
    if not is_tuned(rs):
        return []
    studies = load_studies(rs)
    tune = rs.suite.get("tune") or {}
    space = _space(rs, studies)
    planned = tune.get("trials") or next((s.get("trials_planned") for s in studies), None)
    epochs = tune.get("epochs") or (rs.suite.get("recipe") or {}).get("epochs") or next(
        (s.get("epochs") for s in studies), None)
    rows = tuning_rows(rs, ctx.summary, studies)
    problems = budget_problems(rows, planned, epochs)
    val = (rs.suite.get("dataset") or {}).get("val_split")
    final_epochs = (rs.suite.get("recipe") or {}).get("epochs")
    md = ["## Tuning", ""]
    if problems:
        md += ["**⚠ UNEQUAL TUNING BUDGET: the rows below were not tuned equally, so their "
               "ranking may reflect the tuning rather than the architecture.**", ""]
        md += [f"- **{md_escape(p)}**" for p in problems] + [""]
    else:
        md += [f"Every row had the same search: **{planned} trials x {epochs} epochs** "
               "(equal for every row, checked from the stored trial records)."]
    md += [f"Sampler {tune.get('sampler', '?')}, pruner {tune.get('pruner', '?')}, trials at "
           f"seed {tune.get('seed', '?')}; each trial is scored by its validation top-1 after "
           f"its last epoch" + (f" ({val} training images held out)" if val else "")
           + "; trials never evaluate the test set. The best trial's values then train every "
           f"seed on the full recipe" + (f" ({final_epochs} epochs)" if final_epochs else "")
           + ". Search space:", ""]
    md += [f"- `{name}`: {_fmt_domain(dom)}" for name, dom in space.items()] + [""]
    params = list(space)
    head = (["model", "family", "budget (GMACs)"] + [f"`{p}`" for p in params]
            + ["trials", "best val top-1 (%)", "best trial", "tuning cost", "final runs' cost",
               "tuning / final"])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(params) + 6)) + "|"]
    for t in rows:
        values = t["values"] or {}
        cells = [t["label"], t["family"], fmt_budget(t["budget_gmacs"])]
        cells += [_fmt_value(values[p]) if p in values else "—" for p in params]
        ratio = (f"{t['tune_cost_s'] / t['final_cost_s']:.2f} x"
                 if t["tune_cost_s"] is not None and t["final_cost_s"] else "—")
        cells += [_trials_text(t) if t["study"] else "not measured",
                  "—" if t["best_val_top1"] is None else f"{t['best_val_top1']:.2f}",
                  "—" if t["best_trial"] is None else str(t["best_trial"]),
                  fmt_duration(t["tune_cost_s"]),
                  fmt_duration(t["final_cost_s"]) + (f" ({t['final_runs']} runs)"
                                                     if t["final_runs"] else ""), ratio]
        lines.append("| " + " | ".join(md_escape(str(c)) for c in cells) + " |")
    md += ["\n".join(lines), ""]
    if any(t["values_from"] == "best trial" for t in rows):
        md += ["Rows whose final runs have not finished show their best trial's values.", ""]
    tune_total = math.fsum(t["tune_cost_s"] or 0.0 for t in rows)
    final_total = math.fsum(t["final_cost_s"] or 0.0 for t in rows)
    md += ["Costs are summed training time (evaluation excluded): \"tuning cost\" over the "
           "row's trials, \"final runs' cost\" over its finished seeds. In all: "
           f"{fmt_duration(tune_total)} of tuning, {fmt_duration(final_total)} of final runs"
           + (f" ({tune_total / final_total:.2f} x)" if final_total else "") + ".", ""]
    for e in ctx.fig_entries:
        if e.get("section") == "tuning":
            md += [f"### {e['title']}", "", f"![{e['title']}](figures/{e['files'][0]})", ""]
            if e.get("caption"):
                md += [e["caption"], ""]
    return md


def sensitivity_points(studies: list[dict], param: str) -> list[dict]:
    """The points of ``param``'s sensitivity figure: one per trial that has the value and a
    validation top-1 (a pruned or diverged trial: its last one)."""
    pts = []
    for s in studies:
        best = _best(s)
        for t in s["trials"]:
            curve = [v for v in t.get("val_curve") or [] if v is not None]
            y = t.get("value") if t.get("state") == "complete" else (curve[-1] if curve else None)
            if param not in (t.get("params") or {}) or y is None:
                continue
            pts.append({"study": s["dir"], "label": s.get("label"), "family": s.get("family"),
                        "budget_gmacs": s.get("budget_gmacs"), "trial": t["number"],
                        "state": t.get("state"), "x": t["params"][param], "val_top1": float(y),
                        "best": best is not None and t["number"] == best["number"]})
    return pts


def save_figure(fig, fig_dir: Path, stem: str) -> list[str]:
    """:func:`mpbench.report.figures.save_figure`, imported only when a figure is drawn (the
    section itself renders without matplotlib)."""
    from mpbench.report.figures import save_figure as save

    return save(fig, fig_dir, stem)


def _sensitivity_plot(pts: list[dict], param: str, dom):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from mpbench.report.figures import MARKERS, family_colors

    budgets = sorted({p["budget_gmacs"] for p in pts}, key=budget_key)
    categorical = isinstance(dom, list) or any(
        isinstance(p["x"], (str, bool)) or p["x"] is None for p in pts)
    cats = list(dom) if isinstance(dom, list) else []
    for p in pts:
        if categorical and p["x"] not in cats:
            cats.append(p["x"])
    colors = family_colors(sorted({p["family"] or "" for p in pts}))
    labels = sorted({(p["family"] or "", p["label"] or "") for p in pts})
    marker, per_family = {}, {}
    for fam, lab in labels:
        marker[lab] = MARKERS[per_family.get(fam, 0) % len(MARKERS)]
        per_family[fam] = per_family.get(fam, 0) + 1
    n = len(budgets)
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n + 2.6, 4.2), sharey=True, squeeze=False)
    handles = {}
    for ax, b in zip(axes[0], budgets):
        here = [p for p in pts if p["budget_gmacs"] == b]
        mine_labels = sorted({(p["family"] or "", p["label"] or "") for p in here})
        for k, (fam, lab) in enumerate(mine_labels):
            # categories: the rows side by side around each category, not on top of each other
            shift = (k - (len(mine_labels) - 1) / 2) * min(0.12, 0.6 / max(1, len(mine_labels)))
            for state, filled in (("complete", True), ("pruned", False), ("fail", False)):
                group = [p for p in here if p["label"] == lab and p["state"] == state]
                if not group:
                    continue
                xs = [cats.index(p["x"]) + shift if categorical else p["x"] for p in group]
                h = ax.scatter(xs, [p["val_top1"] for p in group], s=30,
                               marker="x" if state == "fail" else marker[lab],
                               color=colors[fam], facecolors=None if filled or state == "fail"
                               else "none", alpha=0.85, label=f"{lab} ({fam})",
                               gid=f"trials:{lab}:{state}")
                if filled:
                    handles.setdefault(lab, h)
            best = [p for p in here if p["label"] == lab and p["best"]]
            if best:
                ax.scatter([cats.index(p["x"]) + shift if categorical else p["x"] for p in best],
                           [p["val_top1"] for p in best], s=130, facecolors="none",
                           edgecolors="0.2", linewidths=1.0, label="_best", gid=f"best:{lab}")
        if categorical:
            ax.set_xticks(range(len(cats)), [_fmt_value(c) for c in cats])
            ax.set_xlim(-0.5, len(cats) - 0.5)
        elif isinstance(dom, dict):  # the whole range searched, so that its ends show
            lo, hi = float(dom["low"]), float(dom["high"])
            if dom.get("log"):
                ax.set_xscale("log")
                plain = FuncFormatter(lambda v, _: f"{v:g}")
                ax.xaxis.set_major_formatter(plain)
                ax.xaxis.set_minor_formatter(plain if hi / lo < 30 else NullFormatter())
                ax.set_xlim(lo / (hi / lo) ** 0.04, hi * (hi / lo) ** 0.04)
            else:
                ax.set_xlim(lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))
        ax.set_title("budget " + (f"{b:g} GMACs" if b is not None else "as given"))
        ax.set_xlabel(param + (" (log scale)" if isinstance(dom, dict) and dom.get("log") else ""))
        ax.grid(True, alpha=0.3, which="both")
    axes[0][0].set_ylabel("validation top-1 (%) of the trial")
    order = [lab for _, lab in labels if lab in handles]
    fam_of = dict((lab, fam) for fam, lab in labels)
    fig.legend([handles[lab] for lab in order], [f"{lab} ({fam_of[lab]})" for lab in order],
               loc="upper left", bbox_to_anchor=(1.0 - 2.5 / fig.get_figwidth(), 0.93),
               frameon=False)
    fig.suptitle(f"Sensitivity to {param}: every trial")
    fig.tight_layout(rect=(0, 0, 1.0 - 2.6 / fig.get_figwidth(), 1.0))
    return fig


def tuning_figures(rs: ResultSet, fig_dir: Path) -> list[dict]:
    """``sensitivity_<param>`` per tuned hyperparameter; entries carry ``section: tuning`` so
    that the Tuning section shows them (and the Figures section does not)."""
    import matplotlib.pyplot as plt

    from mpbench.report.figures import STYLE

    if not is_tuned(rs):
        return []
    studies = load_studies(rs)
    entries = []
    with plt.rc_context(STYLE):
        for param, dom in _space(rs, studies).items():
            pts = sensitivity_points(studies, param)
            if not pts:
                continue
            fig = _sensitivity_plot(pts, param, dom)
            stem = "sensitivity_" + "".join(c if c.isalnum() or c in "_." else "-" for c in param)
            entries.append({
                "title": f"Sensitivity to {param}", "section": "tuning",
                "files": save_figure(fig, fig_dir, stem),
                "caption": f"Validation top-1 of every trial ({len(pts)}) against its {param}; "
                           "colour: family, marker: model; filled: complete, hollow: pruned "
                           "(its last validation top-1), x: diverged; ringed: the chosen trial."})
    return entries
