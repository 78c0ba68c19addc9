"""One MLflow run per mpbench run, continued across resumes (:mod:`mpbench.training.tracking`).

The MLflow run is named by the mpbench run id and tagged with it; its id is kept in the run
directory (``mlflow.json``, one entry per tracking URI), so a resumed or replayed run
continues the same MLflow run. Params are every value of the resolved run config (model args
after matching, recipe and data set with their defaults, seed, budget, init, and ``tune``
values when a config has them), flattened to dotted keys. Metrics are per epoch with the
epoch as MLflow step; an epoch is logged only if the run's ``epoch`` metric does not have it
yet, so nothing is logged twice. A divergence retry (new seed, training from scratch) is a
new MLflow run tagged ``mpbench.retry``; the diverged attempt's run ends FAILED. A run that
starts from scratch although its MLflow run has epochs (its checkpoint was lost) is a new
MLflow run tagged ``mpbench.restart_of``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from mpbench.config import DatasetConfig, Recipe
from mpbench.storage import atomic_write_json, read_json
from mpbench.training.tracked_metrics import epoch_scalars, final_scalars

__all__ = ["MlflowTracker", "flat_params", "short_timeouts", "TIMEOUTS"]

#: MLflow's HTTP client waits 120 s and retries 7 times by default: minutes of a stalled
#: run for a dead server. These defaults (a user's own environment wins) bound it to seconds.
TIMEOUTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
BATCH = 100  # MLflow's limit on params per log_batch call


def short_timeouts() -> None:
    for key, value in TIMEOUTS.items():
        os.environ.setdefault(key, value)


def flat_params(config: dict) -> dict[str, str]:
    """Every resolved config value as ``dotted.key -> str`` (recipe/dataset defaults filled in)."""
    config = dict(config)
    for key, schema in (("recipe", Recipe), ("dataset", DatasetConfig)):
        if isinstance(config.get(key), dict):
            try:  # the stored config leaves defaults out; the params show every value
                config[key] = {k: v for k, v in schema.model_validate(config[key])}
            except ValueError:
                pass
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(list(value) if isinstance(value, tuple) else value)[:MAX_PARAM_LENGTH]

    walk("", config)
    return out


class MlflowTracker:
    name = "mlflow"

    def __init__(self, uri: str, experiment: str, run_dir: Path, config: dict, *,
                 attempt: int | None = 0, live: bool = True, fresh: bool = False):
        short_timeouts()
        if uri.startswith("file:") or "://" not in uri and ":" not in uri:
            # MLflow 3 refuses file stores unless asked; a suite naming one has asked
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.uri, self.run_dir = uri, Path(run_dir)
        self.client = MlflowClient(tracking_uri=uri)
        known = self.stored().get(uri)
        if attempt is None:  # a replay: whatever run the directory names
            attempt = known["attempt"] if known else 0
        self.run_id = known["run_id"] if known and known["attempt"] == attempt else None
        if self.run_id is not None:
            try:
                run = self.client.get_run(self.run_id)
                if run.info.lifecycle_stage == "deleted":
                    self.run_id = None
            except Exception as exc:
                if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
                    raise
                self.run_id = None  # deleted from the tracker: log the run anew
        if self.run_id is not None and fresh and self.client.get_metric_history(self.run_id,
                                                                                  "epoch"):
            # training starts from scratch (its checkpoint was lost) but this run has epochs:
            # those curves are a dead attempt's; it ends and a new run, tagged, takes over
            self.client.set_tag(self.run_id, "mpbench.status", "restarted")
            self.client.set_terminated(self.run_id, "FAILED")
            self.run_id, restart_of = None, self.run_id
        else:
            restart_of = None
        if self.run_id is None:
            run = self.create(experiment, config, attempt, known)
            if restart_of:
                self.client.set_tag(self.run_id, "mpbench.restart_of", restart_of)
        elif live:
            tags = run.data.tags
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "mpbench.resumes",
                                str(int(tags.get("mpbench.resumes", 0)) + 1))
        params = {k: v for k, v in flat_params(config).items() if k not in run.data.params}
        items = list(params.items())
        from mlflow.entities import Param
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i:i + BATCH]])
        self.epochs = {int(m.step) for m in self.client.get_metric_history(self.run_id, "epoch")}
        self.has_final = any(k.startswith("final_") for k in run.data.metrics)

    def stored(self) -> dict:
        path = self.run_dir / "mlflow.json"
        return read_json(path) if path.exists() else {}

    def create(self, experiment: str, config: dict, attempt: int, previous: dict | None):
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        tags = {"mpbench.run_id": str(config.get("run_id")), "mpbench.model": str(config.get("model")),
                "mpbench.label": str(config.get("label") or config.get("model")),
                "mpbench.seed": str(config.get("seed"))}
        if attempt:
            tags["mpbench.retry"] = str(attempt)  # the attempt after a divergence, new seed
            if previous:
                tags["mpbench.retry_of"] = previous["run_id"]
        run = self.client.create_run(exp_id, run_name=str(config.get("run_id")), tags=tags)
        self.run_id = run.info.run_id
        atomic_write_json(self.run_dir / "mlflow.json", {**self.stored(), self.uri: {
            "run_id": self.run_id, "experiment_id": exp_id, "attempt": attempt}})
        return run

    def log_epoch(self, metrics: dict) -> None:
        epoch = int(metrics["epoch"])
        if epoch in self.epochs:
            return
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        values = {**epoch_scalars(metrics), "epoch": float(epoch)}
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch)
                                                    for k, v in values.items()])
        self.epochs.add(epoch)

    def finish(self, row: dict, run_dir: Path) -> None:
        if not self.has_final:
            from mlflow.entities import Metric
            now, step = int(time.time() * 1000), int(row.get("epochs") or 0)
            self.client.log_batch(self.run_id, metrics=[
                Metric(k, v, now, step) for k, v in final_scalars(row).items()])
            self.has_final = True
        for name in ("result.json", "config.json"):
            if (run_dir / name).exists():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        self.client.set_tag(self.run_id, "mpbench.status", str(row.get("status")))
        self.client.set_terminated(self.run_id, "FINISHED" if row.get("status") == "done"
                                   else "FAILED")

    def end(self, status: str, reason: str | None = None) -> None:
        if reason:
            self.client.set_tag(self.run_id, "mpbench.status", reason)
        self.client.set_terminated(self.run_id, status)

    def close(self) -> None:
        pass  # MLflow's client holds nothing open
