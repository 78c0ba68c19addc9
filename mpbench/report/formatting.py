"""Formatting helpers shared by the writers: numbers, marks and the columns a frame shows."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["as_number", "budget_key", "MACS_CONVENTION", "BEST_MARK", "TIED_MARK", "fmt_acc", "fmt_gmacs",
           "fmt_params", "fmt_budget", "fmt_dev", "fmt_duration", "fmt_rate", "fmt_knob", "fmt_p", "fmt_pp",
           "fmt_n", "fmt_published", "fmt_rel", "test_name", "correction_name", "split_name",
           "extra_columns", "md_escape"]


def as_number(v: Any) -> float | None:
    """A stored cell as a float, or None for empty / NaN / unparsable cells (not measured)."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


MACS_CONVENTION = "fvcore MACs, batch 1, eval mode; 1 MAC = one multiply-add"
BEST_MARK = "★"
TIED_MARK = "(tied best)"


def fmt_acc(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def fmt_gmacs(g: float | None) -> str:
    return "—" if g is None else f"{g:.4f}"


def fmt_params(p: float | None) -> str:
    return "—" if p is None else f"{p / 1e6:.3f}"


def budget_key(b: float | None) -> tuple:
    """The order of budgets in every table: ascending, rows trained as given last."""
    return (1, 0.0) if b is None else (0, b)


def fmt_budget(b: float | None) -> str:
    return "as given" if b is None else f"{b:g}"


def fmt_dev(d: float | None) -> str:
    return "—" if d is None else f"{100 * d:+.1f}%"


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def fmt_rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def fmt_knob(a: dict) -> str:
    if not a["knob"]:
        return "—"
    value = a["knob_value"]
    try:
        value = f"{float(value):g}"
    except ValueError:
        pass
    return f"{a['knob']}={value}"



def split_name(summary: list[dict]) -> str | None:
    """The split every row's top-1 comes from ("test" for results that do not say), or None
    when the rows differ (then each row names its own)."""
    splits = {a["split"] for a in summary if a["split"]}
    return (splits.pop() if len(splits) == 1 else None) if splits else "test"


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "—"
    if p == 0.0:
        return "0"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def fmt_pp(d: float | None) -> str:
    return "—" if d is None or math.isnan(d) else f"{d:+.2f}"


def fmt_n(c) -> str:
    if c.test == "paired":
        return f"{c.n_pairs} paired"
    return f"{c.n_a} vs {c.n_b}"


def test_name(c) -> str:
    if c.exact:  # the t statistic was undefined (no spread between seeds)
        return {"sign": "sign test (exact)", "mann-whitney": "Mann-Whitney (exact)"}[c.exact]
    return {"paired": "paired t", "welch": "Welch t", "none": "none"}[c.test]


def correction_name(method: str) -> str:
    return {"holm": "Holm", "none": "uncorrected"}.get(method, method)


def extra_columns(summary: list[dict]) -> dict[str, bool]:
    """Columns shown only when some row has them (older results render as before)."""
    return {"split": split_name(summary) is None,
            "val": any(a["val_top1_mean"] is not None for a in summary),
            "published": any(a["published"] for a in summary),
            "speed": any(a["speed_train_img_s"] or a["speed_infer_img_s"] for a in summary)}



def fmt_published(a: dict) -> str:
    pub = a["published"]
    if not pub:
        return "—"
    return f"{pub['top1']:.2f} ({fmt_pp(a['published_diff'])})"


def fmt_rel(a: dict) -> str:
    if a["train_speed_rel"] is None:
        return "—"
    return f"{a['train_speed_rel']:.2f}× {a['train_speed_vs']}"



def md_escape(text: str) -> str:
    return text.replace("|", "\\|")
