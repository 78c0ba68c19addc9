"""``report.md`` as a list of sections.

Each section is a function ``(ctx: ReportContext) -> list[str]`` (markdown lines, each block
ending with an empty line); :data:`SECTIONS` is their order. A new report section is a new
module with one such function, inserted into :data:`SECTIONS` where it should appear.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mpbench.report.calibration_section import calibration_section
from mpbench.report.comparisons import comparison_sections
from mpbench.report.compute_equivalent import compute_equivalent_section
from mpbench.report.formatting import BEST_MARK, TIED_MARK, md_escape, split_name
from mpbench.report.header import header_lines
from mpbench.report.markdown import markdown_table
from mpbench.report.memory import memory_section
from mpbench.report.results import ResultSet
from mpbench.report.side_by_side import side_by_side_section
from mpbench.report.tuning import tuning_section

__all__ = ["ReportContext", "SECTIONS", "render_markdown"]


@dataclass
class ReportContext:
    """What every section may read: the results, the summary frame, figures and notes."""

    rs: ResultSet
    summary: list[dict]
    fig_entries: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    title: str = ""
    note: str = ""
    untuned: ResultSet | None = None  # `mpbench report --untuned DIR`: the untuned results

    @property
    def level(self) -> float:
        return self.summary[0]["significance_level"] if self.summary else 0.05

    @property
    def datasets(self) -> list[str]:
        return sorted({a["dataset"] for a in self.summary})


def header_section(ctx: ReportContext) -> list[str]:
    return header_lines(ctx.rs, ctx.title, ctx.note)


def results_section(ctx: ReportContext) -> list[str]:
    """Per data set: the results table, then each budget's comparison tables."""
    md = []
    datasets = ctx.datasets
    for ds in datasets:
        rows = [a for a in ctx.summary if a["dataset"] == ds]
        md += [f"## Results: {ds}" if len(datasets) > 1 else "## Results", "",
               markdown_table(rows)]
        md += comparison_sections(rows, ds if len(datasets) > 1 else "")
    return md


def legend_section(ctx: ReportContext) -> list[str]:
    """What the marks, columns and comparisons mean."""
    level, split = ctx.level, split_name(ctx.summary)
    method = ctx.summary[0].get("significance_correction", "none") if ctx.summary else "none"
    if method == "holm":
        family = (f"p < {level:g} after Holm's correction over the budget's comparisons with "
                  "the best")
        adjusted = ("p (Holm): p adjusted by the Holm-Bonferroni method over the comparisons "
                    "of its table (one budget's rows against one row), so that the chance of "
                    f"any false \"better\" or \"worse\" in it stays below {level:g}; the verdict "
                    "uses it (the CI is per comparison, not adjusted). ")
    else:
        family = f"p < {level:g}, no multiple-test correction (significance_correction: none)"
        adjusted = ""
    return [f"{BEST_MARK} and **bold**: best mean top-1 within its budget, significantly ahead of "
            f"every other row of the budget ({family}); {TIED_MARK}: the best mean is not "
            "significantly ahead of every row, and these rows are not significantly worse than "
            "it (a row with fewer than 2 finished seeds can neither be shown worse nor be "
            "beaten). Top-1/top-5: "
            + (f"{split} accuracy after the last epoch" if split else
               "accuracy after the last epoch on the split each row names")
            + ", mean ± sample standard deviation (n − 1) over the "
            "seeds that finished. \"runs\": the number of seeds, or how many ended in each state "
            "(\"no top-1\": finished without a top-1, e.g. NaN); runs that diverged, ran out of "
            "memory, failed, have no top-1 or are unfinished are counted there and left out of "
            "the means. GMACs and params: the matched model's; \"vs budget\": its "
            "deviation from the budget. Train time and img/s: mean over finished runs (a run's "
            "img/s is its median training throughput over epochs).", "",
            "Comparisons (scipy.stats): Δ top-1 = row minus the other row, in percentage points; "
            "a paired t test over the seeds both finished when they share two or more (the CI "
            "and Δ then refer to those seeds), Welch's t test otherwise; "
            f"{100 * (1 - level):g}% t confidence interval of Δ; p: two-sided; " + adjusted +
            "P(row beats): "
            "the share of shared seeds on which the row is ahead (paired), else the share of "
            "run pairs (Mann-Whitney U / n·m; ties count ½); n: seeds compared. Where the t "
            "test is undefined (no spread: identical per-seed differences, or both rows "
            "constant), an exact rank test gives p instead, with no CI: the sign test when "
            "paired (p = 2 / 2^n when all n differences agree), exact Mann-Whitney otherwise.",
            ""]


def speed_section(ctx: ReportContext) -> list[str]:
    summary = ctx.summary
    if not any(a["speed_train_img_s"] or a["speed_infer_img_s"] for a in summary):
        return []
    devices = sorted({a["speed_device"] for a in summary if a["speed_device"]})
    return ["Train/infer img/s (bench): throughput measured after training by `mpbench "
            f"bench` on the run's device ({', '.join(devices) or 'device not recorded'}); "
            "\"train speed vs\": the row's training img/s relative to that row (the suite's "
            "reference, else the budget's best mean).", ""]


def published_section(ctx: ReportContext) -> list[str]:
    pubs = [a for a in ctx.summary if a["published"]]
    if not pubs:
        return []
    md = ["Published top-1 (Δ): the number published for exactly this configuration, "
          "beside the measured mean (Δ = measured − published, pp). Sources:", ""]
    seen = set()
    for a in pubs:
        if a["label"] in seen:
            continue
        seen.add(a["label"])
        md.append(f"- {md_escape(a['label'])}: {a['published']['top1']:.2f}% — "
                  f"{md_escape(a['published']['source'])}")
    md.append("")
    return md


def figures_section(ctx: ReportContext) -> list[str]:
    entries = [e for e in ctx.fig_entries if not e.get("section")]  # others: in their section
    if not entries:
        return []
    md = ["## Figures", ""]
    for e in entries:
        md += [f"### {e['title']}", "", f"![{e['title']}](figures/{e['files'][0]})", ""]
        if e.get("caption"):
            md += [e["caption"], ""]
    return md


def failures_section(ctx: ReportContext) -> list[str]:
    failures = [r for r in ctx.rs.rows if r["status"] not in ("done", "pending", "partial")]
    if not failures:
        return []
    md = ["## Runs that did not finish", "", "| run | status | epochs | error |",
          "|---|---|---:|---|"]
    for r in failures:
        err = md_escape(r["error"].splitlines()[0][:160]) if r["error"] else ""
        md += [f"| {r['run_id']} | {r['status']} | {r['epochs']} | {err} |"]
    return md + [""]


def notes_section(ctx: ReportContext) -> list[str]:
    return ["## Notes", ""] + [f"- {n}" for n in ctx.notes] + [""] if ctx.notes else []


def footer_section(ctx: ReportContext) -> list[str]:
    return ["---", "", "Regenerate: `mpbench report` (every report under `reports/`, from the "
            "results stored beside it) or `mpbench report RUNS_DIR --out DIR`. The tables as "
            "data: [summary.csv](summary.csv), as LaTeX: [table.tex](table.tex).", ""]


Section = Callable[[ReportContext], "list[str]"]
# the order of report.md; a new section goes in here (e.g. after legend_section)
SECTIONS: list[Section] = [header_section, results_section, legend_section, speed_section,
                           published_section, calibration_section, tuning_section,
                           side_by_side_section,
                           figures_section, failures_section, notes_section,
                           footer_section]
SECTIONS.insert(SECTIONS.index(figures_section), compute_equivalent_section)
SECTIONS.insert(SECTIONS.index(published_section) + 1, memory_section)  # report.memory


def render_markdown(rs: ResultSet, summary: list[dict], fig_entries: list[dict],
                    notes: list[str], title: str, note: str,
                    sections: list[Section] | None = None,
                    untuned: ResultSet | None = None) -> str:
    ctx = ReportContext(rs, summary, fig_entries, notes, title, note, untuned)
    md: list[str] = []
    for section in SECTIONS if sections is None else sections:
        md += section(ctx)
    return "\n".join(md)
