"""The memory axis of a report: activations and peak training/inference memory per row.

Equal MACs are not equal memory, and memory decides the batch a device holds. A run records
``activations_m`` (fvcore, batch 1), ``train_peak_mem_mb`` / ``infer_peak_mem_mb`` at its
batch size and the ``mem_method`` that read them (:mod:`mpbench.suite.memory`); results made
before these columns existed have none, and every figure here then reads "not measured",
never 0. Hooks: :func:`run_fields` (results rows), :func:`memory_fields`
(``summary.ROW_FIELDS``), :data:`CSV_COLUMNS` (``csv_table.SUMMARY_COLUMNS``) and
:func:`memory_section` (``document.SECTIONS``); the figure is :mod:`mpbench.report.memory_figure`.
"""
from __future__ import annotations

import math

from mpbench.bench.memory import format_mb as fmt_mb
from mpbench.report.formatting import as_number, fmt_budget, fmt_gmacs, md_escape

__all__ = ["NUMBER_COLUMNS", "TEXT_COLUMNS", "CSV_COLUMNS", "NOT_MEASURED", "run_fields",
           "memory_fields", "memory_section", "fmt_mb", "fmt_acts", "methods_text"]

#: numeric result columns (None in older results)
NUMBER_COLUMNS = ("activations_m", "train_peak_mem_mb", "infer_peak_mem_mb")
#: text result columns ("" in older results)
TEXT_COLUMNS = ("mem_method", "mem_device")
CSV_COLUMNS = NUMBER_COLUMNS + TEXT_COLUMNS
NOT_MEASURED = "not measured"

#: what each ``mem_method`` means, for the report's legend
METHODS = {
    "cuda-max-allocated": "CUDA caching allocator, torch.cuda.max_memory_allocated (tensors) "
                          "over the measured step, above what was allocated before the model",
    "cpu-rss-hwm": "CPU: resident-set high-water mark (VmHWM, reset before the measured step) "
                   "of a fresh child process, above its RSS before the model was built",
    "cpu-ru-maxrss": "CPU: ru_maxrss of a fresh child process (not resettable: the warm-up "
                     "step counts too), above its RSS before the model was built",
}


def run_fields(r: dict) -> dict:
    """The memory columns of one stored result row, normalised: numbers or None, text or ""
    (absent in results made before they existed)."""
    return {**{k: as_number(r.get(k)) for k in NUMBER_COLUMNS},
            **{k: str(r.get(k) or "") for k in TEXT_COLUMNS}}


def memory_fields(done: list[dict], runs: list[dict]) -> dict:
    """Summary fields of one row (``summary.ROW_FIELDS``): the mean of each figure over the
    finished runs that measured it (seeds share the architecture, so they agree up to the
    allocator's noise), None where none did; the methods and devices that read them."""
    out = {}
    for k in NUMBER_COLUMNS:
        xs = [r[k] for r in done if r.get(k) is not None]
        out[k] = math.fsum(xs) / len(xs) if xs else None
    for k in TEXT_COLUMNS:
        out[k] = " ".join(sorted({r[k] for r in done if r.get(k)}))
    return out


def fmt_acts(v: float | None) -> str:
    return NOT_MEASURED if v is None else f"{v:.3f}"


def methods_text(rows: list[dict]) -> str:
    """The distinct methods and devices of ``rows``, e.g. ``cpu-rss-hwm on cpu (AMD EPYC, 1
    threads)``; "" where nothing was measured."""
    pairs = sorted({(a.get("mem_method") or "", a.get("mem_device") or "") for a in rows
                    if a.get("mem_method")})
    return "; ".join(f"{m} on {d}" if d else m for m, d in pairs)


def _table(rows: list[dict]) -> list[str]:
    md = ["| budget (GMACs) | model | family | GMACs | activations (M) | train peak | "
          "infer peak | method |", "|---|---|---|---:|---:|---:|---:|---|"]
    prev = object()
    for a in rows:
        first = a["budget_gmacs"] != prev
        prev = a["budget_gmacs"]
        cells = [fmt_budget(a["budget_gmacs"]) if first else "", a["label"], a["family"],
                 fmt_gmacs(a["gmacs"]), fmt_acts(a.get("activations_m")),
                 fmt_mb(a.get("train_peak_mem_mb")), fmt_mb(a.get("infer_peak_mem_mb")),
                 a.get("mem_method") or "—"]
        md.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    return md + [""]


def memory_section(ctx) -> list[str]:
    """``## Memory``: per data set, activations and peak memory of every row beside its
    GMACs, and what the method measures (``document.SECTIONS``)."""
    summary = ctx.summary
    if not summary:
        return []
    batch = (ctx.rs.suite.get("recipe") or {}).get("batch_size")
    datasets = ctx.datasets
    md = ["## Memory", "",
          "Equal MACs are not equal memory. Activations: output elements of the "
          "convolutions and matrix products at batch 1 (fvcore's ActivationCountAnalysis, "
          "millions, the convention of timm's benchmark). Peaks: measured after training, "
          "apart from the timing, at the run's per-device batch"
          + (f" (the recipe's {batch}, divided by the ranks under DDP)" if batch else "")
          + ", counting weights, gradients, optimizer state, the batch and what autograd "
          "keeps; MiB = "
          "2^20 bytes. \"not measured\": the run was made before mpbench measured memory (or "
          "with MPBENCH_MEMORY=off); `mpbench bench --memory-of RUNS_DIR` fills it in.", ""]
    for ds in datasets:
        rows = [a for a in summary if a["dataset"] == ds]
        if len(datasets) > 1:
            md += [f"### {ds}", ""]
        md += _table(rows)
    used = sorted({m for a in summary for m in (a.get("mem_method") or "").split()})
    for m in used:
        md.append(f"- {m}: {METHODS.get(m, 'as recorded by the run')}")
    if used:
        md += ["", f"Measured on: {methods_text(summary)}.", ""]
    return md
