"""Suites as typed, validated objects.

A suite YAML is parsed with ``yaml.safe_load`` and validated by pydantic; any problem is a
:class:`SuiteError` whose one-line message names the file and the field, which the CLI turns
into exit code 2 before anything is written.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from mpbench.errors import UserError
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_serializer, model_validator)


class SuiteError(UserError, ValueError):
    """A suite or argument problem, phrased as one line: ``file: field: what is wrong``."""


class FieldValueError(ValueError):
    """A model validator's complaint about one of the model's own fields: the one-line
    message names ``<model>.<field>`` (e.g. ``dataset.val_split``), not just the model."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    name: Literal["cifar10", "cifar100", "imagefolder", "synthetic"]
    root: str | None = None  # default: --data-root, else ~/.cache/mpbench/data
    download: bool = False
    # a class-balanced, fixed subset of the training images (CPU-sized suites); test set stays whole
    train_subset: int | None = Field(None, ge=1)
    # synthetic only: a learnable toy problem of this size
    num_classes: int | None = Field(None, ge=2)
    num_train: int = Field(512, ge=1)
    num_test: int = Field(256, ge=1)
    image_size: int = Field(32, ge=8)
    # hold out a class-balanced, fixed set of this many training images as the validation
    # split (curves and selection; the test set is then evaluated once, after the last epoch).
    # Carved AFTER train_subset when both are given (train_subset: 10000, val_split: 1000 ->
    # 9000 train + 1000 val images). Chosen with its own generator seeded by val_seed, never by
    # a run seed: every run of a suite holds out the same images.
    val_split: int | None = Field(None, ge=1)
    val_seed: int = Field(0, ge=0)
    # image folders (mpbench.data.streaming): memory = decoded once into RAM, augmented in
    # whole batches on the device; stream = read by DataLoader workers through timm's
    # transforms (RandomResizedCrop to crop_size); auto = memory when the decoded set fits
    # memory_budget_gib (a fixed number, so every machine picks the same), else stream
    loader: Literal["auto", "memory", "stream"] = "auto"
    memory_budget_gib: float = Field(8.0, gt=0)
    crop_size: int | None = Field(None, ge=8)  # stream: training/eval crop (default 224)
    # stream: DataLoader workers (default: MPBENCH_NUM_WORKERS, else min(8, cores)); results
    # do not depend on it (augmentation is seeded per image), nor does the run fingerprint
    num_workers: int | None = Field(None, ge=0)
    # stream: where JPEGs are decoded: cpu = in the workers (PIL + timm's transforms); device =
    # on the run's device, the workers only reading bytes (mpbench.data.device_decode).
    # The batches differ between the two (decoder, resampler, RNG), so it is fingerprinted
    # and never chosen automatically
    decode: Literal["cpu", "device"] = "cpu"
    # a folder of CIFAR-10-C / CIFAR-100-C .npy files (<corruption>.npy, labels.npy) for the
    # corruption evaluation; None: mpbench's own built-in set (mpbench.data.corruptions)
    corruptions_root: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_split(self, handler):
        # unset split and loader fields are left out, so configs written before they existed
        # keep the same dataset fingerprint (runner.check_existing)
        return _drop_defaults(handler(self), {"val_split": None, "val_seed": 0,
                                              "loader": "auto", "memory_budget_gib": 8.0,
                                              "crop_size": None, "num_workers": None,
                                              "decode": "cpu", "corruptions_root": None})

    @model_validator(mode="after")
    def _loader_fields_for_image_folders(self):
        if self.name != "imagefolder" and (self.loader != "auto" or self.crop_size
                                           or self.num_workers is not None
                                           or self.decode != "cpu"):
            raise ValueError("loader, crop_size, num_workers and decode apply to name: "
                             "imagefolder only")
        if self.decode != "cpu" and self.loader != "stream":
            raise FieldValueError("decode", f"decode: {self.decode} applies to the streaming "
                                            "loader only: set loader: stream")
        return self

    @model_validator(mode="after")
    def _val_split_fits(self):
        if self.val_split is None:
            if self.val_seed:
                raise FieldValueError("val_seed", "needs a dataset.val_split (it seeds which "
                                      "training images are held out)")
            return self
        known = {"cifar10": (50000, 10), "cifar100": (50000, 100)}
        total, classes = known.get(self.name, (None, None))
        if self.name == "synthetic":
            total, classes = self.num_train, self.num_classes or 10
        elif self.name == "imagefolder":  # counted from the folder at planning unless given
            classes = self.num_classes
        if self.train_subset is not None:
            total = self.train_subset if total is None else min(total, self.train_subset)
        if total is not None and self.val_split >= total:
            raise FieldValueError("val_split", f"{self.val_split} leaves no training images "
                                  f"(the training set has {total}); give fewer")
        if classes is not None and self.val_split % classes:
            raise FieldValueError("val_split", f"{self.val_split} does not divide across the "
                                  f"{classes} classes (give a multiple of {classes})")
        return self


class Recipe(_Strict):
    """The training recipe; defaults are the standard CIFAR one (DESIGN.md §4) but 200 epochs."""

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: tuple[int, ...] = (60, 120, 160)
    gamma: float = Field(0.2, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    crop_padding: int = Field(4, ge=0)
    flip: bool = True
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA only
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on CUDA only
    deterministic: bool = False  # bit-reproducible kernels (slower on CUDA)
    # torch.compile the training forward (MACs are always counted on the uncompiled model);
    # off by default: minutes of compilation per run, and not every model compiles
    compile: bool = False
    max_retries: int = Field(0, ge=0)  # re-tries of a diverged run with a new seed offset
    # evaluate the validation split (dataset.val_split) every N epochs and after the last;
    # without a validation split nothing is evaluated during training
    eval_every: int = Field(1, ge=1)
    # the test set is evaluated once, after the last epoch; test_every: N also evaluates it
    # every N epochs (test-set curves: an explicit opt-in, flagged in results as test_curve)
    test_every: int | None = Field(None, ge=1)
    # fine-tuning (mpbench.training.init): train only the classifier (backbone frozen, BN in eval
    # mode) for the first N epochs; resize every batch on the device to input_size² (e.g. 224
    # for ImageNet-pretrained weights; None: the data set's size)
    freeze_backbone_epochs: int = Field(0, ge=0)
    input_size: int | None = Field(None, ge=8)
    # streamed image folders (dataset.loader: stream): evaluation resizes to
    # crop_size / crop_pct and centre-crops; training RandomResizedCrop's area scale is
    # crop_scale_min..1 (timm's ImageNet defaults)
    crop_pct: float = Field(0.875, gt=0, le=1)
    crop_scale_min: float = Field(0.08, gt=0, le=1)
    # checkpoint inside an epoch every N minutes of training (also on SIGTERM / SIGUSR1);
    # resuming continues at the next batch with the metrics of an uninterrupted run
    checkpoint_every_min: float = Field(30.0, gt=0)
    # after the last epoch, evaluate the test set under common corruptions (one pass per
    # corruption and severity: mpbench.training.robustness); false skips it
    corruptions: bool = True

    @model_serializer(mode="wrap")
    def _omit_unset_finetune(self, handler):
        # fine-tuning fields at their defaults are left out, so run configs written before
        # they existed keep the same recipe fingerprint (runs.check_existing)
        return _drop_defaults(handler(self), {"freeze_backbone_epochs": 0, "input_size": None,
                                             "eval_every": 1, "compile": False,
                                             "test_every": None, "crop_pct": 0.875,
                                             "crop_scale_min": 0.08,
                                             "checkpoint_every_min": 30.0,
                                             "corruptions": True})

    @model_validator(mode="after")
    def _milestones_fit(self):
        if self.schedule == "step" and any(m <= 0 for m in self.milestones):
            raise ValueError("milestones must be positive epochs")
        if self.warmup_epochs >= self.epochs:
            raise ValueError("warmup_epochs must be shorter than epochs")
        return self


class SearchRange(_Strict):
    """A numeric range of a tuned recipe field (int or float as the field is)."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low:g})")
        return self


#: recipe fields a study may not vary: the schedule length is tune.epochs, and these change
#: what is measured or how it is stored rather than how well a model trains
UNTUNABLE = ("epochs", "eval_every", "test_every", "checkpoint_every_min", "max_retries",
             "deterministic", "eval_batch_size")


class TuneConfig(_Strict):
    """``tune:``: the same hyperparameter search, with the same budget, for every model x
    budget of a suite (mpbench.suite.tune); trials are selected on the validation split."""

    trials: int = Field(16, ge=1)          # per model x budget, equal for every row
    epochs: int | None = Field(None, ge=1)  # the trials' schedule (default: recipe.epochs)
    seed: int = Field(0, ge=0)             # the seed every trial trains with
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "none"
    # None: SQLite in the output directory; a database URL (postgresql://...) or journal:PATH
    storage: str | None = None
    # recipe field -> {low, high, log} (a range) or a list of values (a categorical choice)
    space: dict[str, Any]

    @field_validator("space")
    @classmethod
    def _space(cls, v):
        if not v:
            raise ValueError("give at least one recipe field to tune")
        v = dict(v)
        for name, dom in v.items():
            if isinstance(dom, dict):
                try:
                    v[name] = dom = SearchRange.model_validate(dom)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    where = ".".join([name, *map(str, err["loc"])])
                    msg = ("unknown key" if err["type"] == "extra_forbidden"
                           else err["msg"].removeprefix("Value error, "))
                    raise FieldValueError(where, msg) from None
            elif not isinstance(dom, list):
                raise FieldValueError(name, "give a range {low, high, log} or a list of values")
            if name not in Recipe.model_fields:
                close = difflib.get_close_matches(name, list(Recipe.model_fields), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise FieldValueError(name, f"not a recipe field{hint}")
            if name in UNTUNABLE:
                raise FieldValueError(name, "cannot be tuned (tune.epochs sets the trials' "
                                      "schedule)" if name == "epochs" else "cannot be tuned")
            if isinstance(dom, list) and (not dom or len(set(map(repr, dom))) != len(dom)):
                raise FieldValueError(name, "a categorical choice needs distinct values")
            if isinstance(dom, SearchRange) and Recipe.model_fields[name].annotation is int \
                    and not (dom.low.is_integer() and dom.high.is_integer()):
                raise FieldValueError(name, "an integer field needs integer low and high")
        return v

    @model_validator(mode="after")
    def _grid_is_categorical(self):
        if self.sampler == "grid":
            ranges = [k for k, d in self.space.items() if not isinstance(d, list)]
            if ranges:
                raise FieldValueError("space", f"sampler: grid needs lists of values, not "
                                      f"ranges ({', '.join(ranges)})")
            points = 1
            for d in self.space.values():
                points *= len(d)
            if self.trials > points:
                raise FieldValueError("trials", f"{self.trials} is more than the grid's "
                                      f"{points} points")
        return self

    def values_to_check(self, name: str) -> list:
        """The values of ``name`` a trial can take at the ends of its domain."""
        dom = self.space[name]
        if isinstance(dom, list):
            return dom
        cast = int if Recipe.model_fields[name].annotation is int else float
        return [cast(dom.low), cast(dom.high)]


class PublishedReference(_Strict):
    """A published top-1 for exactly this configuration and recipe, with where it comes from."""

    top1: float = Field(gt=0, le=100)  # percent (100 - published error)
    source: str = Field(min_length=1)  # paper / table / repository, e.g. "He et al. 2016, Table 6"


class ModelSpec(_Strict):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # how the model appears in results; default: its name
    match: bool = True        # match each suite budget (False: build as given)
    # start from weights (mpbench.training.init): a checkpoint file (.pt/.pth/.safetensors), a
    # finished run directory, or timm:<name> (pretrained, needs the hub or its cache)
    init: str | None = None
    init_mode: Literal["finetune", "upcycle"] = "finetune"  # upcycle: single path -> mp_resnet
    init_strict: bool = False    # error on missing/unexpected/mis-shaped keys (head excepted)
    # relative std of noise on upcycled path convs; None: mpbench.models.mp_resnet.UPCYCLE_NOISE
    # (0 keeps the paths identical: refused at planning for a routed model, whose gates could
    # then never move)
    upcycle_noise: float | None = Field(None, ge=0)
    # the published number of this exact configuration (reports print it beside the measured
    # mean); only for the published model under the standard recipe, never a matched variant
    reference: PublishedReference | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_init(self, handler):
        return _drop_defaults(handler(self), {"init": None, "init_mode": "finetune",
                                              "init_strict": False, "upcycle_noise": None,
                                              "reference": None})

    @model_validator(mode="after")
    def _init_options_need_init(self):
        if self.init is None and (self.init_mode != "finetune" or self.init_strict
                                  or self.upcycle_noise is not None):
            raise ValueError("init_mode, init_strict and upcycle_noise need an init: source")
        if self.upcycle_noise is not None and self.init_mode != "upcycle":
            raise ValueError("upcycle_noise applies to init_mode: upcycle only")
        return self

    @property
    def display(self) -> str:
        return self.label or self.name


#: tracking URI schemes MLflow's client understands (a plain path is a file store too)
MLFLOW_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


class TrackingConfig(_Strict):
    """Where a run's curves also go (mpbench.training.tracking); never part of a fingerprint."""

    tensorboard: bool = False           # event files under runs/<run_id>/tensorboard/
    mlflow: str | None = None           # a tracking URI: file:./mlruns, sqlite:///m.db, http://h:5000
    mlflow_experiment: str | None = None  # default: the suite's name

    @field_validator("mlflow")
    @classmethod
    def _known_scheme(cls, v):
        if v is None:
            return v
        scheme = v.split("://", 1)[0] if "://" in v else (v.split(":", 1)[0] if ":" in v else "")
        if not v.strip() or (scheme and scheme.split("+", 1)[0] not in MLFLOW_SCHEMES):
            raise ValueError(f"'{v}' is not a tracking URI (schemes: {', '.join(MLFLOW_SCHEMES)}, "
                             "or a directory path)")
        return v

    @model_validator(mode="after")
    def _experiment_needs_mlflow(self):
        if self.mlflow_experiment is not None and self.mlflow is None:
            raise FieldValueError("mlflow_experiment", "needs tracking.mlflow (a tracking URI)")
        return self


class Suite(_Strict):
    name: str
    dataset: DatasetConfig
    recipe: Recipe = Recipe()
    seeds: tuple[int, ...] = (0,)
    budgets_gmacs: tuple[float, ...] = ()
    tolerance: float = Field(0.02, gt=0, lt=1)
    models: tuple[ModelSpec, ...]
    plugins: tuple[str, ...] = ()
    description: str = ""
    # reports: the label every other row of a budget is compared against (besides the best),
    # and the level below which a difference counts as significant (the best mark, "tied")
    reference: str | None = None
    significance_level: float = Field(0.05, gt=0, lt=1)
    # multiple-test correction over each budget's comparisons (k - 1 rows against one)
    significance_correction: Literal["holm", "none"] = "holm"
    # tune every model x budget with the same search before its final runs (docs/tuning.md)
    tune: TuneConfig | None = None
    tracking: TrackingConfig = TrackingConfig()  # TensorBoard / MLflow; off by default

    @model_serializer(mode="wrap")
    def _omit_unset_report_fields(self, handler):
        # report-only, tune and tracking fields at their defaults are left out, so suite.json
        # of runs made before they existed stays the same
        return _drop_defaults(handler(self), {"reference": None, "significance_level": 0.05,
                                              "significance_correction": "holm",
                                              "tune": None,
                                              "tracking": TrackingConfig().model_dump()})

    @model_validator(mode="after")
    def _tune_fits_the_suite(self):
        if self.tune is None:
            return self
        if self.dataset.val_split is None:
            raise FieldValueError("tune", "needs dataset.val_split: trials are selected on "
                                  "the validation split, never on the test set")
        base = self.recipe.model_dump()
        for name in self.tune.space:
            for value in self.tune.values_to_check(name):
                try:
                    Recipe.model_validate({**base, name: value})
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                    raise FieldValueError(f"tune.space.{name}", f"{value!r}: {msg}") from None
        return self

    @field_validator("reference")
    @classmethod
    def _reference_is_a_model(cls, v, info):
        models = info.data.get("models")
        if v is not None and models is not None and v not in {m.display for m in models}:
            labels = [m.display for m in models]
            close = difflib.get_close_matches(v, labels, n=3)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
                f"labels: {', '.join(labels)}"
            raise ValueError(f"no model is labelled '{v}' ({hint})")
        return v

    @field_validator("name")
    @classmethod
    def _name_is_a_path_component(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '-', '_' or '.'")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if not v:
            raise ValueError("give at least one seed")
        if len(set(v)) != len(v):
            raise ValueError("duplicate seeds")
        return v

    @field_validator("budgets_gmacs")
    @classmethod
    def _budgets(cls, v):
        if any(b <= 0 for b in v):
            raise ValueError("budgets must be positive GMACs")
        if len(set(v)) != len(v):
            raise ValueError("duplicate budgets")
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v):
        if not v:
            raise ValueError("list at least one model")
        seen = set()
        for spec in v:
            if spec.display in seen:
                raise ValueError(f"duplicate model entry '{spec.display}' (give each a distinct label)")
            seen.add(spec.display)
        return v


def _drop_defaults(data: dict, defaults: dict) -> dict:
    return {k: v for k, v in data.items() if not (k in defaults and v == defaults[k])}


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate already-loaded YAML data; errors become one-line :class:`SuiteError`."""
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: expected a mapping at top level, got {type(data).__name__}")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        loc = tuple(err["loc"]) + ((cause.field,) if isinstance(cause, FieldValueError) else ())
        field = _field_path(loc) or "<top>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SuiteError(f"{source}: {field}: {msg}{more}") from None


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SuiteError(f"{path}:{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_suite(data, str(path))


def parse_override(token: str, source: str, form: str = "key=value") -> tuple[str, Any]:
    """``key=value`` from a command line, the value read as YAML (``width=16`` is an int)."""
    key, sep, raw = token.partition("=")
    if not sep or not key:
        raise SuiteError(f"{source}: expected {form}, got '{token}'")
    try:
        return key, (yaml.safe_load(raw) if raw else "")
    except yaml.YAMLError:
        return key, raw
