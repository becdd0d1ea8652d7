"""Structured-config schemas for every config group, registered in Hydra's ConfigStore, and `validate`.

Each YAML option in `conf/<group>/` starts from the schema stored here as `schema/<group>/<option>` (Hydra's
"structured config as schema" pattern; a group of its own, so Hydra's error messages do not offer schemas
as options), so a misspelt key, a wrong type or an invalid choice fails at composition with a message naming
it. Values are checked by each schema's `__post_init__`, which `validate` runs for the whole config before a
stage starts, so no bad setting is found only after hours of work. `metric` options are generated from the
metric registry: every registered metric is a `metric=<name>` option with no YAML to keep in sync.
"""

from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hnas.errors import HnasError, require

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ReportKind(Enum):
    correlation = "correlation"
    search = "search"


class LrSchedule(Enum):
    cosine = "cosine"
    linear = "linear"
    exp = "exp"


class LrStep(Enum):
    after_epoch = "after_epoch"  # HNAS: the scheduler steps after each epoch; epoch e trains at value e
    before_epoch = "before_epoch"  # original DARTS: it steps first; epoch e trains at value e + 1


@dataclass
class DatasetConfig:
    name: str = MISSING
    num_classes: int = MISSING


@dataclass
class MetricConfig:
    """`metric=<name>`: a registered metric; or a combined one (`metric=agg`: the rank aggregate of the
    metrics `of`; `metric=reg_swap` with `options` mu and sigma: hnas.metrics.aggregate)."""

    name: str = MISSING
    of: List[str] = field(default_factory=list)
    options: Dict[str, Optional[float]] = field(default_factory=dict)

    def __post_init__(self):
        from hnas.metrics.aggregate import COMBINED

        if self.name not in COMBINED:
            require(not self.of, "metric.of", list(self.of),
                    f"only a combined metric ({', '.join(COMBINED.names())}) is made of other metrics")
            require(not self.options, "metric.options", dict(self.options), f"metric={self.name} takes no options")
            return
        problems = COMBINED.get(self.name).problems(list(self.of), dict(self.options))
        if problems:
            key, why = problems[0]
            require(False, key, list(self.of) if key == "metric.of" else dict(self.options), why)

    @property
    def combined(self):
        """How this metric combines others (hnas.metrics.aggregate.Combined), or None for a registered one."""
        from hnas.metrics.aggregate import COMBINED

        return COMBINED.get(self.name) if self.name in COMBINED else None

    def combine(self, columns):
        """The values of this combined metric for an (N, len(of)) array of its components' values."""
        return self.combined.combine(columns, **self.options)

    @property
    def components(self):
        """The metrics whose values make this one: itself, or those it combines."""
        return list(self.of) if self.of else [self.name]


@dataclass
class ProbeConfig:
    """The probe batch on which metrics are computed, and the seed of metric tables."""

    batch_size: Optional[int] = 64  # None only with per_class
    per_class: Optional[int] = None  # N images per class instead of a uniform random draw
    split: str = "train"
    seed: int = 0  # seeds the probe batch and every network's init; shared by all search seeds
    per_arch: bool = False  # draw a fresh batch per architecture (seeded per architecture)

    def __post_init__(self):
        require(self.batch_size is None or self.batch_size >= 1, "probe.batch_size", self.batch_size,
                "a probe batch needs at least 1 image (the published metrics use 64)")
        require(self.batch_size is not None or self.per_class is not None, "probe.batch_size", None,
                "set a batch size, or probe.per_class")
        require(self.per_class is None or self.per_class >= 1, "probe.per_class", self.per_class,
                "needs at least 1 image per class, or null")
        require(self.split in ("train", "test"), "probe.split", self.split, "choose train or test")
        require(self.seed >= 0, "probe.seed", self.seed, "seeds are whole numbers >= 0")


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    results_dir: str = MISSING


@dataclass
class PrecomputeStage:
    name: str = "precompute"
    metrics: List[str] = field(default_factory=lambda: ["${metric.name}"])
    limit: Optional[int] = None  # a seeded random sample of this many architectures (drawn with the run seed)
    archs: Optional[List[str]] = None  # an explicit list of architectures
    shard: int = 0
    num_shards: int = 1
    workers: int = 1  # local processes; each gets cores // workers torch threads
    log_every: int = 100

    def __post_init__(self):
        from hnas.metrics import list_metrics

        require(len(self.metrics) > 0, "stage.metrics", [], "name at least one metric")
        unknown = [m for m in self.metrics if m not in list_metrics()]
        require(not unknown, "stage.metrics", list(self.metrics),
                f"unknown metric(s) {unknown}; choose from: {', '.join(list_metrics())}")
        require(self.limit is None or self.limit >= 1, "stage.limit", self.limit,
                "sample at least 1 architecture, or leave it null for the whole space")
        require(self.archs is None or len(self.archs) > 0, "stage.archs", [],
                "an empty list names no architecture; leave stage.archs out to compute the whole space")
        require(self.archs is None or self.limit is None, "stage.archs", "[...]",
                "set stage.archs or stage.limit, not both")
        require(self.num_shards >= 1, "stage.num_shards", self.num_shards, "needs at least 1 shard")
        require(0 <= self.shard < self.num_shards, "stage.shard", self.shard,
                f"needs 0 <= stage.shard < stage.num_shards={self.num_shards}")
        require(self.workers >= 1, "stage.workers", self.workers, "needs at least 1 process")
        require(self.log_every >= 1, "stage.log_every", self.log_every, "log every N >= 1 architectures")


@dataclass
class SearchStage:
    name: str = "search"


@dataclass
class ReportStage:
    name: str = "report"
    kind: ReportKind = ReportKind.correlation
    metrics: Optional[List[str]] = None  # correlation: the table's metric columns to report (None: all)
    oracle: Optional[str] = None  # correlation: the oracle whose accuracies it ranks against (None: the space's)
    inputs: List[str] = field(default_factory=list)  # search: run or sweep folders to summarise

    def __post_init__(self):
        require(self.kind != ReportKind.search or len(self.inputs) > 0, "stage.inputs", [],
                "stage.kind=search needs stage.inputs=[<run or sweep folder>, ...]")
        require(self.metrics is None or len(self.metrics) > 0, "stage.metrics", [],
                "name at least one metric column, or leave it null for all")


@dataclass
class TrainStage:
    name: str = "train"
    arch: Optional[str] = None  # an arch string or a name the space knows (DARTS: DARTS_V2, ...)
    from_result: Optional[str] = None  # a search run's result.json, or its folder

    def __post_init__(self):
        require(self.arch is None or self.from_result is None, "stage.from_result", self.from_result,
                "name the architecture once: stage.arch or stage.from_result, not both")


@dataclass
class TrainConfig:
    """A training protocol (conf/train/<name>.yaml; hnas.train). Schedules: hnas.train.schedule."""

    name: str = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING  # in total: each of N processes (torchrun) takes batch_size / N
    lr: float = MISSING
    lr_schedule: LrSchedule = LrSchedule.cosine
    lr_step: LrStep = LrStep.after_epoch
    lr_min: float = 0.0  # cosine: the floor
    lr_gamma: float = 0.97  # exp: lr * lr_gamma ** t
    warmup_epochs: int = 0  # the first N epochs train at lr * (epoch + 1) / N, overriding the schedule
    momentum: float = 0.9
    weight_decay: float = MISSING
    label_smoothing: float = 0.0  # of the training loss; the test loss is plain cross-entropy
    init_channels: int = MISSING
    layers: int = MISSING
    auxiliary: bool = MISSING  # the auxiliary head and its loss, if the space's network has one
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.0  # reached linearly: epoch e drops with drop_path_prob * e / epochs
    grad_clip: Optional[float] = 5.0  # max gradient norm, null: no clipping
    cutout: Optional[int] = None  # side of the Cutout square, null: no Cutout
    workers: int = 4  # data-loading processes per training process, 0: load in the training process
    amp: bool = True  # mixed precision (float16 autocast, GradScaler) on CUDA; CPU always trains in float32
    channels_last: bool = True  # on CUDA
    deterministic: bool = True  # cuDNN deterministic, no benchmark (False: cudnn.benchmark, as DARTS)
    steps_per_epoch: Optional[int] = None  # stop each epoch after N steps (quick checks); null: whole epoch
    subset: Optional[int] = None  # only the first N images of each split (quick checks); null: all
    # Train on the first `holdout` fraction of the training set and evaluate on the next as many images (HNAS's
    # queries: 0.5 on CIFAR, 0.25 on ImageNet); null: train on the training set, evaluate on the test set.
    holdout: Optional[float] = None
    holdout_shuffle: bool = False  # split a seeded permutation of the training set instead of its file order
    augment: bool = True  # false: train on the evaluation transform (HNAS's CIFAR queries: normalise only)
    eval_every_epoch: bool = True  # false: evaluate after the last epoch only

    def __post_init__(self):
        from hnas.train.schedule import LINEAR_TAIL

        require(self.epochs >= 1, "train.epochs", self.epochs, "train at least 1 epoch")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, "needs at least 1 image per step")
        require(self.lr > 0, "train.lr", self.lr, "the learning rate must be > 0")
        require(0 <= self.lr_min <= self.lr, "train.lr_min", self.lr_min, f"needs 0 <= lr_min <= train.lr={self.lr}")
        require(0 < self.lr_gamma <= 1, "train.lr_gamma", self.lr_gamma, "a decay factor in (0, 1]")
        require(self.lr_schedule != LrSchedule.linear or self.epochs > LINEAR_TAIL, "train.epochs", self.epochs,
                f"the linear schedule needs more than its {LINEAR_TAIL} tail epochs")
        require(0 <= self.warmup_epochs <= self.epochs, "train.warmup_epochs", self.warmup_epochs,
                f"needs 0 <= warmup_epochs <= train.epochs={self.epochs}")
        require(0 <= self.momentum < 1, "train.momentum", self.momentum, "needs 0 <= momentum < 1")
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "needs weight_decay >= 0")
        require(0 <= self.label_smoothing < 1, "train.label_smoothing", self.label_smoothing, "needs 0 <= eps < 1")
        require(self.init_channels >= 1, "train.init_channels", self.init_channels, "needs at least 1 channel")
        require(self.layers >= 1, "train.layers", self.layers, "needs at least 1 layer")
        require(self.auxiliary_weight >= 0, "train.auxiliary_weight", self.auxiliary_weight, "needs a weight >= 0")
        require(0 <= self.drop_path_prob < 1, "train.drop_path_prob", self.drop_path_prob, "a probability in [0, 1)")
        require(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", self.grad_clip,
                "a norm > 0, or null for no clipping")
        require(self.cutout is None or self.cutout >= 1, "train.cutout", self.cutout,
                "a square side >= 1 pixel, or null for no Cutout")
        require(self.workers >= 0, "train.workers", self.workers, "a number of processes >= 0")
        require(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "train.steps_per_epoch",
                self.steps_per_epoch, "at least 1 step, or null for whole epochs")
        require(self.subset is None or self.subset >= 2, "train.subset", self.subset,
                "at least 2 images (BatchNorm needs 2 per batch), or null for the whole dataset")
        require(self.holdout is None or 0 < self.holdout <= 0.5, "train.holdout", self.holdout,
                "a fraction in (0, 0.5] (training and evaluation each take that much), or null for the test set")


@dataclass
class Config:
    seed: int = 0
    device: Device = Device.auto
    jobs_per_gpu: int = 1  # jobs that may share one GPU at a time (hnas.devices; docs/scale.md)
    space: Any = MISSING
    dataset: Any = MISSING
    metric: Any = MISSING
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    stage: Any = MISSING
    search: Any = MISSING
    train: Any = MISSING
    # The training a query does where the oracle trains (the DARTS space): a `train` config, chosen by the
    # dataset (conf/query/<dataset>.yaml: HNAS's query protocols); None for a dataset without one.
    query: Any = None
    paths: Any = MISSING

    def __post_init__(self):
        require(self.seed >= 0, "seed", self.seed, "seeds are whole numbers >= 0")
        require(self.jobs_per_gpu >= 1, "jobs_per_gpu", self.jobs_per_gpu, "at least 1 job per GPU")


STAGE_SCHEMAS = {
    "precompute": PrecomputeStage,
    "search": SearchStage,
    "report": ReportStage,
    "train": TrainStage,
}


def register_configs():
    from hnas.metrics import list_metrics
    from hnas.metrics.aggregate import COMBINED
    from hnas.search import SEARCHES
    from hnas.spaces import SPACES, list_spaces

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name in list_spaces():
        cs.store(group="schema/space", name=name, node=SPACES.get(name).schema)
    cs.store(group="schema/dataset", name="dataset", node=DatasetConfig)
    cs.store(group="schema/paths", name="paths", node=PathsConfig)
    cs.store(group="schema/train", name="train", node=TrainConfig)
    for name, schema in STAGE_SCHEMAS.items():
        cs.store(group="schema/stage", name=name, node=schema)
    for name in SEARCHES.names():
        cs.store(group="schema/search", name=name, node=SEARCHES.get(name).schema)
    for name in list_metrics():
        cs.store(group="metric", name=name, node=MetricConfig(name=name))
    for name in COMBINED.names():
        # typed but not built: reg_swap's options are the user's to give, so its stored node is incomplete
        combined, node = COMBINED.get(name), OmegaConf.structured(MetricConfig)
        node.name, node.of, node.options = name, list(combined.components), {o: None for o in combined.options}
        cs.store(group="metric", name=name, node=node)
    if not OmegaConf.has_resolver("hnas_groups"):
        OmegaConf.register_new_resolver("hnas_groups", group_listing)


def group_options(group):
    """The options of a config group (`space`, or a nested one: `hydra/launcher`): its conf/<group>/*.yaml
    files and the nodes stored in Hydra's ConfigStore under it (metrics, spaces or algorithms registered from
    outside hnas, the launchers of installed Hydra plugins)."""
    stored = ConfigStore.instance().repo
    for part in group.split("/"):
        stored = stored.get(part, {})
    return sorted({p.stem for p in (CONF_DIR / group).glob("*.yaml")}
                  | {name.removesuffix(".yaml") for name, node in stored.items() if not isinstance(node, dict)})


def yaml_groups():
    """The config groups of conf/: every folder that holds options, nested ones as `hydra/launcher`."""
    return sorted({p.parent.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*.yaml")} - {"."})


def group_listing():
    """The `--help` list of group options."""
    return "\n".join(f"{group}: {', '.join(group_options(group))}" for group in sorted({*yaml_groups(), "metric"}))


def validate(cfg):
    """The typed config of a composed one: every group's schema dataclass (`Config` at the top), built once
    at the entry point, so library code gets checked values, never a raw DictConfig. Raises HnasError naming
    the first bad setting before any work starts; keys added with `+key=value` that no schema knows are
    refused too (Hydra accepts them)."""
    from hnas import data
    from hnas.spaces import create_space, space_options

    _refuse_unknown_keys(cfg, "")
    try:
        config = OmegaConf.to_object(cfg)  # builds every schema dataclass: their __post_init__ checks values
    except OmegaConfBaseException as error:
        raise HnasError(f"invalid config: {error}") from None
    expected = data.num_classes(config.dataset.name)
    require(config.dataset.num_classes == expected, "dataset.num_classes", config.dataset.num_classes,
            f"{config.dataset.name} has {expected} classes")
    space = create_space(config.space.name, **space_options(config.space))
    if hasattr(space, "check_dataset"):  # a space whose networks are for some datasets only
        space.check_dataset(config.dataset.name)
    if config.stage.name == "precompute" and config.stage.archs:
        for arch in config.stage.archs:
            space.validate(arch)
    if config.stage.name == "train" and config.stage.arch is not None:
        space.validate(config.stage.arch)
    return config


def _refuse_unknown_keys(node, path):
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        known = {f.name for f in fields(schema)}
        unknown = [key for key in node.keys() if key not in known]
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise HnasError(f"unknown setting {where}; {path or 'the config'} has: {', '.join(sorted(known))}. "
                            "(Hydra's hint to add it with '+' would only make it be ignored.)")
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _refuse_unknown_keys(child, f"{path}.{key}" if path else str(key))
