"""Tuning trials with Optuna: one study per model x budget, the same search for every row.

Layout under ``--out`` (next to ``runs/``)::

    tune/optuna.db                  the default storage (SQLite; tune.storage may name another)
    tune/<label>[-b<budget>g]/      one study per model x budget
        .lock                       held for milliseconds while a trial is asked or taken over
        study.json                  every trial's values, state, validation curve, cost
        trial-<n>/                  a run like any other: config.json, metrics.json,
                                    checkpoint.pt, log.txt, trial.json, .lock

A trial is asked (``study.ask``) and its directory claimed (the runner's ``flock``) under the
study's lock, so with several workers no more than ``tune.trials`` trials are ever created. A
trial stays RUNNING in the storage while its directory is claimed; a RUNNING trial whose
directory nobody holds belongs to a worker that died, and the next worker takes it over and
resumes it from its checkpoint: no trial is lost, none is run twice. Trials evaluate the
validation split after every epoch (reported to the pruner) and never the test set.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import optuna
from optuna.trial import TrialState

from mpbench.config import Recipe, SearchRange, Suite, SuiteError
from mpbench.storage import atomic_write_json, read_json
from mpbench.suite.plan import RunPlan, slug
from mpbench.suite.runner import claim, is_claimed

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: the states of a trial that was run (a diverged trial is FAIL: it spent its share of the budget)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def study_dir_name(plan: RunPlan) -> str:
    """``<label>[-b<budget>g]``: the run id without its seed."""
    return slug(plan.label) + (f"-b{plan.budget_gmacs:g}g" if plan.budget_gmacs is not None else "")


def study_name(suite: Suite, plan: RunPlan) -> str:
    return f"{suite.name}.{study_dir_name(plan)}"


def tune_epochs(suite: Suite) -> int:
    return suite.tune.epochs or suite.recipe.epochs


def trial_recipe(suite: Suite, values: dict) -> Recipe:
    """The recipe a trial trains with: the suite's, with the trial's values, shortened to
    ``tune.epochs`` (step milestones and warm-up scaled in proportion), the validation split
    evaluated every epoch (the pruner's curve) and no test-set curve."""
    full = Recipe.model_validate({**suite.recipe.model_dump(), **values})
    epochs, scale = tune_epochs(suite), tune_epochs(suite) / full.epochs
    milestones = tuple(sorted({max(1, round(m * scale)) for m in full.milestones}))
    return Recipe.model_validate({**full.model_dump(), "epochs": epochs,
                                  "milestones": milestones,
                                  "warmup_epochs": full.warmup_epochs * scale,
                                  "eval_every": 1, "test_every": None})


def distributions(suite: Suite) -> dict:
    """``tune.space`` as Optuna distributions (int or float as the recipe field is)."""
    out = {}
    for name, dom in suite.tune.space.items():
        if isinstance(dom, SearchRange):
            if Recipe.model_fields[name].annotation is int:
                out[name] = optuna.distributions.IntDistribution(int(dom.low), int(dom.high),
                                                                 log=dom.log)
            else:
                out[name] = optuna.distributions.FloatDistribution(dom.low, dom.high, log=dom.log)
        else:
            out[name] = optuna.distributions.CategoricalDistribution(dom)
    return out


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is covered (that
    works inside ``study.optimize`` only): here ``tune.trials`` ends the study."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(suite: Suite, trial_number: int) -> optuna.samplers.BaseSampler:
    """A sampler seeded by (tune.seed, the trial's number): whichever worker asks trial n,
    it draws from the same generator, so a suite gives the same trials (given the same
    finished trials before it, for TPE)."""
    tune = suite.tune
    seed = tune.seed * 100_003 + trial_number
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "grid":
        # one seed for all: the grid's order is shuffled by it, and trial n takes point n
        return AskTellGridSampler(dict(tune.space), seed=tune.seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, tune.trials // 3)),
                                      constant_liar=True)


def make_pruner(suite: Suite) -> optuna.pruners.BasePruner:
    if suite.tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if suite.tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tune_epochs(suite))
    return optuna.pruners.NopPruner()


_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


def storage_url(suite: Suite, out: Path) -> str:
    """Where the studies live: tune.storage, else SQLite in ``out/tune``."""
    return suite.tune.storage or f"sqlite:///{(out / 'tune' / 'optuna.db').resolve()}"


def open_storage(suite: Suite, out: Path) -> optuna.storages.BaseStorage:
    """One storage object per process and location: an RDB (SQLite, PostgreSQL, ...) or
    Optuna's journal file (``journal:PATH``, for a shared filesystem)."""
    url = storage_url(suite, out)
    if url not in _STORAGES:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend
            path = Path(url.removeprefix("journal:")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            _STORAGES[url] = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        else:
            kwargs, rdb_url = {}, with_driver(url)
            if url.startswith("sqlite:"):  # several workers: wait for a writer, do not fail
                kwargs = {"connect_args": {"timeout": 120}}
            try:
                # the first opening creates the tables: two workers doing it at once collide
                # (PostgreSQL: UniqueViolation on pg_type), so they take turns
                with study_lock(out / "tune", ".storage.lock"):
                    _STORAGES[url] = optuna.storages.RDBStorage(rdb_url, engine_kwargs=kwargs)
            except Exception as exc:  # bad URL, missing driver, unreachable server
                raise SuiteError(f"tune.storage: cannot open {url.split('@')[-1]}: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return _STORAGES[url]


def with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 assumes psycopg 3,
    mpbench's ``postgres`` extra installs psycopg2 (binary wheels everywhere)."""
    import importlib.util
    if (url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None
            and importlib.util.find_spec("psycopg2") is not None):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


@contextmanager
def study_lock(study_dir: Path, name: str = ".lock") -> Iterator[None]:
    """Serialise asking and taking over trials of one study among this output dir's workers."""
    study_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(study_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def study_fingerprint(suite: Suite, plan: RunPlan) -> dict:
    """What the study's trials depend on; a changed one must not mix into an old study."""
    tune = suite.tune.model_dump(mode="json", exclude={"storage"})
    return json.loads(json.dumps({
        "tune": tune, "recipe": trial_recipe(suite, {}).model_dump(mode="json"),
        "model": plan.model, "args": plan.args, "dataset": suite.dataset.model_dump(mode="json")},
        default=str))


def load_study(suite: Suite, plan: RunPlan, out: Path, source: str = "<suite>",
               trial_number: int = 0) -> optuna.Study:
    """The model x budget's study (created on first use), its sampler seeded for trial
    ``trial_number``; refuses a study made with another search, recipe or model."""
    name = study_name(suite, plan)
    study = optuna.create_study(storage=open_storage(suite, out), study_name=name,
                                direction="maximize", load_if_exists=True,
                                sampler=make_sampler(suite, trial_number), pruner=make_pruner(suite))
    want = study_fingerprint(suite, plan)
    have = study.user_attrs.get("fingerprint")
    if have is None:
        study.set_user_attr("fingerprint", want)
    elif have != want:
        changed = next(k for k in want if have.get(k) != want.get(k))
        raise SuiteError(f"{source}: tune: study {name} in {storage_url(suite, out)} was made "
                         f"with a different {changed}; use another --out or tune.storage")
    return study


def trial_plan(plan: RunPlan, suite: Suite) -> RunPlan:
    """The run a trial is: the model x budget's architecture at tune.seed."""
    return replace(plan, seed=suite.tune.seed, run_id=f"{study_dir_name(plan)}-trial")


def take_trial(suite: Suite, plan: RunPlan, out: Path, stack: ExitStack,
               source: str = "<suite>") -> tuple[str, optuna.Study | None, int | None]:
    """Claim the study's next trial to train: ("resume", study, n) for a RUNNING trial whose
    worker died, ("new", study, n) for a new one, ("busy", None, None) when the others'
    trials are all that is left, ("done", None, None) when the study is complete. The
    claim is entered into ``stack`` and held until the caller closes it."""
    study_dir = out / "tune" / study_dir_name(plan)
    with study_lock(study_dir):
        study = load_study(suite, plan, out, source)
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state == TrialState.RUNNING and not is_claimed(study_dir / f"trial-{t.number}"):
                if stack.enter_context(claim(study_dir / f"trial-{t.number}")):
                    return "resume", study, t.number
        if len(trials) < suite.tune.trials:
            study = load_study(suite, plan, out, source, trial_number=len(trials))
            trial = study.ask(distributions(suite))
            trial_dir = study_dir / f"trial-{trial.number}"
            assert stack.enter_context(claim(trial_dir))  # new: nobody else can hold it
            atomic_write_json(trial_dir / "config.json", {
                "study": study.study_name, "number": trial.number, "params": trial.params,
                **trial_plan(plan, suite).as_dict(),
                "dataset": suite.dataset.model_dump(mode="json"),
                "recipe": trial_recipe(suite, trial.params).model_dump(mode="json")})
            return "new", study, trial.number
        if any(t.state == TrialState.RUNNING for t in trials):
            return "busy", None, None
        return "done", None, None


def _log(trial_dir: Path, message: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(trial_dir / "log.txt", "a") as f:
        f.write(f"{stamp} {message}\n")


def run_trial(suite: Suite, plan: RunPlan, out: Path, study: optuna.Study, number: int, data,
              device, progress: bool | None = None,
              echo: Callable[[str], None] = print) -> dict:
    """Train a claimed trial (resuming its checkpoint), reporting each epoch's validation
    top-1 to the pruner; tells the study the outcome and writes ``trial.json``."""
    from mpbench.registry import create_model
    from mpbench.suite.starts import init_run, spec_for
    from mpbench.training.callbacks import recipe_callbacks
    from mpbench.training.trainer import Diverged, load_checkpoint, seed_everything, train

    trial_dir = out / "tune" / study_dir_name(plan) / f"trial-{number}"
    frozen = study.get_trials(deepcopy=False)[number]
    trial = optuna.trial.Trial(study, frozen._trial_id)
    params = frozen.params
    recipe = trial_recipe(suite, params)
    seed = suite.tune.seed

    def note(msg: str) -> None:
        _log(trial_dir, msg)
        echo(f"  {study_dir_name(plan)} trial {number}: {msg}")

    resume = load_checkpoint(trial_dir / "checkpoint.pt", log=note)
    note(f"{json.dumps(params)}" + (f", resuming after epoch {resume['epoch']}" if resume else ""))
    seed_everything(seed, recipe.deterministic)
    model = create_model(plan.model, **plan.args)
    if resume is None:
        init_run(model, spec_for(suite, plan), seed, trial_dir, note)
    history = list(resume["history"]) if resume else []
    state = "pruned"

    def on_epoch(m: dict) -> None:
        history.append(m)
        atomic_write_json(trial_dir / "metrics.json", history, durable=False)
        note(f"epoch {m['epoch']}/{recipe.epochs} loss {m['train_loss']:.3f} "
             f"val top1 {m['val_top1']:.2f}")
        trial.report(m["val_top1"], m["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned()

    train_time = float(resume["train_time_s"]) if resume else 0.0
    try:
        res = train(model, data, recipe, seed=seed, device=device,
                    checkpoint=trial_dir / "checkpoint.pt", resume=resume, on_epoch=on_epoch,
                    progress=progress, desc=f"{study_dir_name(plan)} trial {number}",
                    callbacks=recipe_callbacks(recipe), evaluate_test=False)
        history, train_time, state = res.history, res.train_time_s, "complete"
    except optuna.TrialPruned:
        train_time = sum(h["epoch_time_s"] for h in history)
    except Diverged as exc:
        note(f"diverged: {exc}")
        state = "diverged"
        train_time = sum(h["epoch_time_s"] for h in history)
    curve = [h["val_top1"] for h in history]
    record = {"number": number, "params": params, "state": state,
              "value": curve[-1] if state == "complete" else None, "val_curve": curve,
              "epochs": len(history), "train_time_s": train_time,
              "test_evaluated": any(h.get("test_top1") is not None for h in history)}
    atomic_write_json(trial_dir / "trial.json", record)
    trial.set_user_attr("train_time_s", train_time)
    trial.set_user_attr("val_curve", curve)
    tell = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
            "diverged": TrialState.FAIL}[state]
    study.tell(number, record["value"] if state == "complete" else None, state=tell)
    note(f"{state}" + (f", val top1 {record['value']:.2f}" if state == "complete" else "")
         + f" in {train_time:.0f}s")
    export_study(suite, plan, out, study)
    return record


def export_study(suite: Suite, plan: RunPlan, out: Path, study: optuna.Study) -> Path:
    """``study.json``: the study as stored files, so reports and status need no storage."""
    trials = [{"number": t.number, "state": t.state.name.lower(), "params": t.params,
               "value": t.value, "val_curve": t.user_attrs.get("val_curve",
                                                               list(t.intermediate_values.values())),
               "train_time_s": t.user_attrs.get("train_time_s")}
              for t in study.get_trials(deepcopy=False)]
    path = out / "tune" / study_dir_name(plan) / "study.json"
    atomic_write_json(path, {"study": study.study_name, "label": plan.label, "family": plan.family,
                             "model": plan.model, "budget_gmacs": plan.budget_gmacs,
                             "trials_planned": suite.tune.trials, "epochs": tune_epochs(suite),
                             "sampler": suite.tune.sampler, "pruner": suite.tune.pruner,
                             "space": list(suite.tune.space), "trials": trials})
    return path


def study_outcome(suite: Suite, plan: RunPlan, out: Path, source: str = "<suite>") -> dict | None:
    """The best trial's values and the study's cost, once every trial has finished (None
    before): what a final run carries as ``RunPlan.tune``."""
    study = load_study(suite, plan, out, source)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    if len(finished) < suite.tune.trials or len(trials) > len(finished):
        return None
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    return {"values": dict(best.params) if best else {}, "trials": len(finished),
            "best_val_top1": best.value if best else None, "best_trial": best.number if best else None,
            "cost_s": sum(t.user_attrs.get("train_time_s") or 0.0 for t in finished)}
