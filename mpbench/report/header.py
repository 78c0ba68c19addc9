"""The report's header: data set, suite, recipe, seeds, budgets, device, dates, versions."""
from __future__ import annotations

from mpbench.report.formatting import MACS_CONVENTION
from mpbench.report.results import STATUS_ORDER, ResultSet

__all__ = ["describe_dataset", "describe_recipe", "header_lines"]


def describe_dataset(ds: dict) -> str:
    name = ds.get("name", "?")
    text = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "synthetic": "synthetic (toy data)",
            "imagefolder": "image folder"}.get(name, name)
    root = ds.get("root")
    if name == "imagefolder" and root:
        text += f" `{root}`"
        if "cifar10-jpg" in str(root):
            text += (" — the **JPEG copy of CIFAR-10** (quality 75; accuracy on it is close to, "
                     "not equal to, CIFAR-10's)")
    if name == "synthetic":
        text += (f": {ds.get('num_classes') or 10} classes, {ds.get('num_train')} train / "
                 f"{ds.get('num_test')} test images of {ds.get('image_size')}x{ds.get('image_size')}")
    if ds.get("train_subset"):
        text += (f"; training on a fixed class-balanced subset of {ds['train_subset']:,} "
                 "images, full test set")
    if ds.get("val_split"):
        text += (f"; validation split: {ds['val_split']:,} class-balanced training images "
                 f"held out (val_seed {ds.get('val_seed') or 0}), not trained on; curves "
                 f"and val top-1 come from it, top-1 from the test set (see the recipe for "
                 f"when it is evaluated)")
    return text


def describe_recipe(rc: dict, ds: dict | None = None, test_curves: bool = False) -> str:
    """The recipe in words; ``ds`` (the suite's dataset) says whether the runs have a
    validation split, which ``eval_every`` is about. ``test_curves``: the stored histories
    hold test evaluations before the last epoch without ``test_every`` (runs made before it
    existed, when ``eval_every`` evaluated the test set)."""
    if not rc:
        return "unknown (no suite.json)"
    sgd = "SGD" + (f" (Nesterov, momentum {rc.get('momentum'):g})" if rc.get("nesterov")
                   else f" (momentum {rc.get('momentum', 0):g})")
    sched = rc.get("schedule")
    if sched == "step":
        sched = (f"step ×{rc.get('gamma'):g} at epochs "
                 + "/".join(str(m) for m in rc.get("milestones", [])))
    parts = [f"{rc.get('epochs')} epochs", sgd, f"lr {rc.get('lr'):g}",
             f"batch {rc.get('batch_size')}", f"weight decay {rc.get('weight_decay'):g}",
             f"{sched} schedule"]
    if rc.get("warmup_epochs"):
        parts.append(f"{rc['warmup_epochs']:g} warm-up epochs")
    if rc.get("label_smoothing"):
        parts.append(f"label smoothing {rc['label_smoothing']:g}")
    if rc.get("freeze_backbone_epochs"):
        parts.append(f"backbone frozen for the first {rc['freeze_backbone_epochs']} epochs")
    if rc.get("input_size"):
        parts.append(f"inputs resized to {rc['input_size']}x{rc['input_size']}")
    if (ds or {}).get("val_split"):  # without one, nothing is evaluated during training
        every = rc.get("eval_every") or 1
        parts.append("validation split evaluated " + (f"every {every} epochs and after the last"
                                                      if every > 1 else "every epoch"))
    if rc.get("test_every"):
        parts.append(f"test set {'also ' if (ds or {}).get('val_split') else ''}evaluated "
                     f"every {rc['test_every']} epochs (test-set curves)")
    elif (ds or {}).get("val_split"):
        parts.append("test set evaluated once, after the last epoch")
    elif test_curves:
        every = rc.get("eval_every") or 1
        parts.append("test set evaluated " + (f"every {every} epochs and after the last"
                                              if every > 1 else "every epoch")
                     + " (test-set curves; runs made before `test_every` existed)")
    aug = []
    if rc.get("crop_padding"):
        aug.append(f"random crop (pad {rc['crop_padding']})")
    if rc.get("flip"):
        aug.append("horizontal flip")
    parts.append("augmentation: " + (" + ".join(aug) if aug else "none"))
    parts.append(f"AMP {rc.get('amp', 'auto')}")
    return ", ".join(parts)


def header_lines(rs: ResultSet, title: str, note: str) -> list[str]:
    from mpbench import __version__

    suite = rs.suite
    finished = sorted(r["finished_at"] for r in rs.rows if r["finished_at"])
    devices = sorted({r["device"] for r in rs.rows if r["device"]})
    versions = sorted({str(c.get("mpbench_version")) for c in rs.configs.values()
                       if c.get("mpbench_version")})
    counts = {s: sum(r["status"] == s for r in rs.rows) for s in STATUS_ORDER}
    dates = (f"{finished[0]} … {finished[-1]}" if len(finished) > 1 else
             (finished[0] if finished else "—"))
    budgets = suite.get("budgets_gmacs") or []
    test_curves = any(sum(e.get("test_top1") is not None for e in h[:-1]) > 0
                      for h in rs.metrics.values())
    lines = [f"# {title}", ""]
    if note:
        lines += [note.strip(), ""]
    if suite.get("description"):
        lines += [f"> {suite['description'].strip()}", ""]
    lines += [
        f"- **Data set:** {describe_dataset(suite.get('dataset') or {'name': (rs.rows[0]['dataset'])})}",
        f"- **Suite:** `{suite.get('name', rs.rows[0]['suite'])}` — {len(rs.rows)} runs"
        + (", all finished" if counts["done"] == len(rs.rows) else
           ": " + ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])),
        f"- **Recipe:** {describe_recipe(suite.get('recipe') or {}, suite.get('dataset'), test_curves)}",
        f"- **Seeds:** {', '.join(str(s) for s in suite.get('seeds', sorted({r['seed'] for r in rs.rows})))}",
        "- **Budgets:** " + (", ".join(f"{b:g}" for b in budgets) + " GMACs, matched within "
                               f"±{100 * suite.get('tolerance', 0.02):g}% (depth knobs: nearest depth, then a small width adjustment)"
                               if budgets else "none (models as given)"),
        f"- **Complexity:** {MACS_CONVENTION}; " + _counted_input(suite.get("recipe") or {}),
        "- **Initialisation:** " + (
            "; ".join(sorted({f"{r['label']} from `{r['init']}` ({r['init_mode'] or 'init'})"
                              for r in rs.rows if r["init"]}))
            + ("; others from scratch" if any(not r["init"] for r in rs.rows) else "")
            if any(r["init"] for r in rs.rows) else "from scratch (random init, the run's seed)"),
        f"- **Device:** {', '.join(devices) or '—'}",
        f"- **Runs finished:** {dates} (UTC)",
        f"- **mpbench:** runs made with {', '.join(versions) or 'unknown'}; "
        f"report by mpbench {__version__}",
        "",
    ]
    return lines


def _counted_input(recipe: dict) -> str:
    """The input size MACs are counted at: the recipe's ``input_size`` when it resizes the
    batches (the plan counts at that size), else the data set's own image size."""
    size = recipe.get("input_size")
    if size:
        return f"input {size}x{size} (recipe.input_size: batches resized to it)"
    return "input at the data set's image size"
