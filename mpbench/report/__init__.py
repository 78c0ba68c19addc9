"""Report: tables (markdown, CSV, LaTeX), figures and path analysis, from stored results only.
Layer 6: may import every layer below; nothing imports it but the CLI."""
from mpbench.report.tables import (MACS_CONVENTION, ResultSet, aggregate, build_report, copy_results,
                                   latex_table, load_results, markdown_table, regenerate_all,
                                   summary_csv)

__all__ = ["MACS_CONVENTION", "ResultSet", "load_results", "aggregate", "markdown_table",
           "latex_table", "summary_csv", "build_report", "copy_results", "regenerate_all"]
