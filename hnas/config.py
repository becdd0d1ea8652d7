"""Structured-config schemas for every config group, registered in Hydra's ConfigStore.

Each YAML option in `conf/<group>/` starts from the schema stored here as `<option>_schema` (Hydra's
"structured config as schema" pattern), so a misspelt key, a wrong type or an invalid choice fails at
composition with a message naming it. `metric` options are generated from the metric registry: every
registered metric is a `metric=<name>` option with no YAML to keep in sync.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Layout(Enum):
    compact = "compact"
    reference = "reference"


class ReportKind(Enum):
    correlation = "correlation"
    search = "search"


@dataclass
class SpaceConfig:
    name: str = "nb201"
    layout: Layout = Layout.compact


@dataclass
class DatasetConfig:
    name: str = MISSING
    num_classes: int = MISSING


@dataclass
class MetricConfig:
    name: str = MISSING


@dataclass
class ProbeConfig:
    """The probe batch on which metrics are computed, and the seed of metric tables."""

    batch_size: int = 64
    per_class: Optional[int] = None  # N images per class instead of a uniform random draw
    split: str = "train"
    seed: int = 0  # seeds the probe batch and every network's init; shared by all search seeds
    per_arch: bool = False  # draw a fresh batch per architecture (seeded per architecture)


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    results_dir: str = MISSING


@dataclass
class PrecomputeStage:
    name: str = "precompute"
    metrics: List[str] = field(default_factory=lambda: ["${metric.name}"])
    limit: Optional[int] = None  # a seeded random sample of this many architectures (seed: probe.seed)
    archs: Optional[List[str]] = None  # an explicit list of architectures
    shard: int = 0
    num_shards: int = 1
    workers: int = 1  # local processes; each gets cores // workers torch threads
    log_every: int = 100


@dataclass
class SearchStage:
    name: str = "search"


@dataclass
class TrainStage:
    name: str = "train"


@dataclass
class ReportStage:
    name: str = "report"
    kind: ReportKind = ReportKind.correlation
    metrics: Optional[List[str]] = None  # correlation: the table's metric columns to report (None: all)
    inputs: List[str] = field(default_factory=list)  # search: run or sweep folders to summarise


@dataclass
class Config:
    seed: int = 0
    device: Device = Device.auto
    space: Any = MISSING
    dataset: Any = MISSING
    metric: Any = MISSING
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    stage: Any = MISSING
    search: Any = MISSING
    paths: Any = MISSING


STAGE_SCHEMAS = {
    "precompute": PrecomputeStage,
    "search": SearchStage,
    "train": TrainStage,
    "report": ReportStage,
}


def register_configs():
    from hnas.metrics import list_metrics
    from hnas.search.config import SEARCH_SCHEMAS

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="space", name="nb201_schema", node=SpaceConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="paths", name="paths_schema", node=PathsConfig)
    for name, schema in STAGE_SCHEMAS.items():
        cs.store(group="stage", name=f"{name}_schema", node=schema)
    for name, schema in SEARCH_SCHEMAS.items():
        cs.store(group="search", name=f"{name}_schema", node=schema)
    for name in list_metrics():
        cs.store(group="metric", name=name, node=MetricConfig(name=name))
    if not OmegaConf.has_resolver("hnas_groups"):
        OmegaConf.register_new_resolver("hnas_groups", group_listing)


def group_listing():
    """The `--help` list of group options; Hydra's own list would also show the `*_schema` entries."""
    from hnas.metrics import list_metrics

    groups = {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(CONF_DIR.iterdir()) if d.is_dir()}
    groups["metric"] = list_metrics()
    return "\n".join(f"{group}: {', '.join(options)}" for group, options in sorted(groups.items()))
