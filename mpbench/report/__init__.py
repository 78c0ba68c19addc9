"""Report: tables (markdown, CSV, LaTeX), figures and path analysis, from stored results only.
Layer 6: may import every layer below; nothing imports it but the CLI.

Modules, by job: ``results`` (load a suite's output), ``summary`` (the per-budget frame and
its comparisons), ``stats`` (the tests), ``formatting`` (cell formats), ``markdown``,
``csv_table``, ``latex`` (one writer per format), ``comparisons`` (comparison tables and
``mpbench compare``), ``header`` and ``document`` (report.md, as a list of sections),
``build`` (build_report, regenerate_all), ``figures``, ``analyze``.
"""
from mpbench.report.build import build_report, regenerate_all
from mpbench.report.csv_table import summary_csv
from mpbench.report.formatting import MACS_CONVENTION
from mpbench.report.latex import latex_table
from mpbench.report.markdown import markdown_table
from mpbench.report.results import ResultSet, copy_results, load_results
from mpbench.report.summary import aggregate

__all__ = ["MACS_CONVENTION", "ResultSet", "load_results", "aggregate", "markdown_table",
           "latex_table", "summary_csv", "build_report", "copy_results", "regenerate_all"]
