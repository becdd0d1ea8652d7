import dataclasses
import importlib
import math
import subprocess
import sys
from dataclasses import is_dataclass

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError
from torch import nn

from conftest import REPO, compose, configure
from hnas import data
from hnas.config import STAGE_SCHEMAS, group_options, register_configs, yaml_groups
from hnas.metrics import compute_metrics, list_metrics
from hnas.search import SEARCHES, run_search
from hnas.spaces import SPACES, create_space, list_spaces, space_options

CONF = REPO / "conf"


def yaml_options(group):
    """The options of a YAML config group: its conf/<group>/*.yaml files."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


YAML_GROUPS = yaml_groups()
# Each config group and the test below that builds every one of its options.
BUILT_GROUPS = {"space", "dataset", "metric", "stage", "search", "paths", "experiment", "train", "query",
                "hydra/launcher"}
# Options are read from conf/ and the registries; unions, so an option only one side has still gets built
# (and fails there) rather than being skipped.
SPACE_OPTIONS = sorted(set(yaml_options("space")) | set(list_spaces()))
SEARCH_OPTIONS = sorted(set(yaml_options("search")) | set(SEARCHES.names()))
METRIC_OPTIONS = list_metrics()


def run_cli(*args):
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_every_config_group_has_options_and_a_build_check():
    assert set(YAML_GROUPS) | {"metric"} == BUILT_GROUPS
    for group in YAML_GROUPS:
        assert yaml_options(group), f"conf/{group}/ has no option"
    assert len(METRIC_OPTIONS) >= 1


def test_registries_and_conf_agree():
    # every registered search algorithm has a schema and a yaml option, and nothing else has either
    assert set(SEARCHES.names()) == set(yaml_options("search"))
    assert all(is_dataclass(SEARCHES.get(name).schema) for name in SEARCHES.names())
    # every registered space names its config dataclass and is a space option (a conf/space yaml, or stored
    # by whoever registers it)
    assert set(list_spaces()) <= set(group_options("space"))
    assert all(is_dataclass(SPACES.get(name).schema) for name in list_spaces())
    # every dataset hnas.data reads is a dataset option
    assert set(data.NAMES) == set(yaml_options("dataset"))


@pytest.mark.parametrize("option", SPACE_OPTIONS)
def test_space_option_builds_a_network(option):
    cfg = configure(f"space={option}")
    assert cfg.space.name == option and type(cfg.space) is SPACES.get(option).schema
    space = create_space(cfg.space.name, **space_options(cfg.space))
    assert space.name == option
    [arch] = space.sample_distinct(1, 0)
    assert space.validate(arch) == arch
    net = space.build(arch, num_classes=cfg.dataset.num_classes)
    assert isinstance(net, nn.Module)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert tuple(out.shape) == (2, cfg.dataset.num_classes) and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("option", SEARCH_OPTIONS)
def test_search_option_builds_and_runs(option):
    from hnas.search.testing import constructed_problem

    cfg = configure(f"search={option}")
    assert cfg.search.name == option
    assert type(cfg.search) is SEARCHES.get(option).schema  # typed once, at the entry point
    algorithm = SEARCHES.get(option)(cfg.search)
    assert set(algorithm.metric_names(cfg.metric.name)) <= set(list_metrics())
    # the composed settings, with a 3-query limit, run on the toy problem (256 architectures)
    settings = {**dataclasses.asdict(cfg.search), "queries": 3, "budget_s": None}
    if "metrics" in settings:  # an algorithm that combines metrics: the one registered metric the toy has
        settings["metrics"] = ["condnum"]
    problem, _ = constructed_problem(seed=0)
    result = run_search(settings, problem)
    assert result.algorithm == option
    assert result.arch in problem.space.members and result.n_queries <= 3
    assert result.index == problem.oracle.index(result.arch)


class TinyNet(nn.Module):
    """A stem, two cells and a head: the structure every metric reads (AZ-NAS's the stem and cell outputs)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.cells = nn.Sequential(nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)),
                                   nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2)))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.cells(self.stem(x)))


def tiny_model():
    torch.manual_seed(0)
    return TinyNet()


@pytest.mark.parametrize("option", METRIC_OPTIONS)
def test_metric_option_computes_on_a_tiny_model(option):
    cfg = configure(f"metric={option}")
    assert cfg.metric.name == option
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 3, 8, 8, generator=generator)
    targets = torch.randint(0, 10, (4,), generator=generator)
    values = compute_metrics(tiny_model(), inputs, targets, [cfg.metric.name])
    assert list(values) == [option]
    assert isinstance(values[option], float) and math.isfinite(values[option])


@pytest.mark.parametrize("option", yaml_options("dataset"))
def test_dataset_option_has_the_datasets_classes(option):
    cfg = configure(f"dataset={option}")
    assert cfg.dataset.name == option
    assert cfg.dataset.num_classes == data.num_classes(cfg.dataset.name)


@pytest.mark.parametrize("option", yaml_options("stage"))
def test_stage_option_is_a_stage_that_runs(option):
    cfg = configure(f"stage={option}")
    assert cfg.stage.name == option and type(cfg.stage) is STAGE_SCHEMAS[option]
    stage = importlib.import_module(f"hnas.stages.{cfg.stage.name}")  # what hnas.app.execute runs
    assert callable(stage.run)


@pytest.mark.parametrize("option", yaml_options("train"))
def test_train_option_is_a_protocol_with_a_learning_rate_every_epoch(option):
    from hnas.config import TrainConfig
    from hnas.train.schedule import lr_at

    cfg = configure("stage=train", f"train={option}")
    assert type(cfg.train) is TrainConfig and cfg.train.name == option
    rates = [lr_at(cfg.train, epoch) for epoch in range(cfg.train.epochs)]
    assert all(0 <= lr <= cfg.train.lr for lr in rates) and max(rates) > 0


@pytest.mark.parametrize("option", yaml_options("query"))
def test_query_option_is_the_protocol_of_its_dataset_on_a_held_out_split(option):
    from hnas.config import TrainConfig

    network = ["space.network=imagenet"] if option == "imagenet" else []  # the metric network for its images
    cfg = configure("space=darts", f"dataset={option}", *network)  # the dataset picks its query protocol
    named = configure("space=darts", f"dataset={option}", f"query={option}", *network).query
    assert type(cfg.query) is TrainConfig and cfg.query == named
    assert 0 < cfg.query.holdout <= 0.5 and not cfg.query.auxiliary and cfg.query.layers == 5


# The Hydra plugin each launcher preset extends, and the extra that installs it.
LAUNCHER_PLUGINS = {"processes": ("hydra_joblib_launcher", "the base install"),
                    "submitit_processes": ("hydra_submitit_launcher", 'pip install -e ".[slurm]"'),
                    "slurm": ("hydra_submitit_launcher", 'pip install -e ".[slurm]"'),
                    "ray_cluster": ("hydra_ray_launcher", 'pip install -e ".[ray]"')}


@pytest.mark.parametrize("option", yaml_options("hydra/launcher"))
def test_launcher_option_composes_to_a_launcher_class(option):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.utils import get_class

    plugin, extra = LAUNCHER_PLUGINS[option]
    pytest.importorskip(f"hydra_plugins.{plugin}", reason=f"hydra/launcher={option} needs {extra}")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"hydra/launcher={option}"], return_hydra_config=True)
    launcher = get_class(cfg.hydra.launcher._target_)
    assert launcher.__module__.startswith(f"hydra_plugins.{plugin}")
    assert "sweeper" not in OmegaConf.to_container(cfg.hydra.launcher)  # the preset holds launcher keys only


@pytest.mark.parametrize("option", yaml_options("paths"))
def test_paths_option_reads_the_environment(option, monkeypatch, tmp_path):
    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HNAS_RESULTS_DIR")
    cfg = configure(f"paths={option}")
    assert cfg.paths.data_dir == str(tmp_path / "data")
    assert cfg.paths.results_dir == str(tmp_path / "data" / "results")


@pytest.mark.parametrize("option", yaml_options("experiment"))
def test_experiment_option_validates_and_names_a_shipped_table_or_a_query_protocol(option):
    from hnas import paths
    from hnas.metric_table import TableSettings

    cfg = configure(f"experiment={option}")
    if cfg.space.name == "darts":  # its queries train, with HNAS's protocol for the dataset
        assert cfg.query is not None and cfg.query.holdout is not None and cfg.stage.name == "search"
        return
    if cfg.space.name == "nb101":  # no table is shipped: it searches the cells of the table the user precomputes
        assert cfg.search.universe == "metric_table" and cfg.probe.batch_size == 256 and cfg.stage.name == "search"
        return
    # an NB201 preset searches on a metric table shipped with hnas (conf/experiment/: nothing to compute)
    name = TableSettings.from_config(cfg).name
    assert (paths.embedded_dir() / "metric-tables" / name / "meta.json").is_file(), name


def test_the_published_metrics_are_registered():
    assert {"grad_norm", "snip", "grasp", "ntk_trace", "condnum", "synflow", "params", "flops"} <= set(METRIC_OPTIONS)


def test_defaults_and_paths_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path))
    cfg = compose()
    assert cfg.stage.name == "search" and cfg.search.name == "hnas" and cfg.metric.name == "snip"
    assert cfg.paths.data_dir == str(tmp_path)
    assert cfg.probe.batch_size == 64 and cfg.seed == 0


def test_precompute_metric_list_defaults_to_the_selected_metric():
    assert list(compose("stage=precompute", "metric=grasp").stage.metrics) == ["grasp"]


def test_misspelt_key_is_named():
    with pytest.raises(ConfigCompositionException) as error:
        compose("stage=precompute", "stage.limt=3")
    assert "limt" in str(error.value.__cause__ or error.value)


def test_unknown_group_option_lists_choices():
    with pytest.raises(MissingConfigException) as error:
        compose("metric=snipp")
    assert "snipp" in str(error.value) and "grad_norm" in str(error.value)


@pytest.mark.parametrize("override, name", [("device=gpu", "device"), ("seed=abc", "seed"),
                                            ("space.layout=fancy", "layout"), ("probe.batch_size=x", "batch_size")])
def test_bad_values_are_rejected_with_the_key(override, name):
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        compose(override)
    assert name in str(error.value) + str(error.value.__cause__)


def test_help_lists_groups_and_options():
    result = run_cli("--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    listed = dict(line.split(": ", 1) for line in lines if ": " in line and " " not in line.split(": ", 1)[0])
    for group in YAML_GROUPS:
        # hnas's options; a Hydra group also lists what installed plugins store (launchers: joblib, ...)
        options = listed[group].split(", ")
        assert options == yaml_options(group) if not group.startswith("hydra/") else \
            set(yaml_options(group)) <= set(options), group
    # the registry's, and the combined metrics'
    assert f"metric: {', '.join(sorted([*METRIC_OPTIONS, 'agg', 'reg_swap']))}" in lines
    assert "schema" not in result.stdout.split("== Resolved config")[0]  # schemas are not offered as options


def test_cli_mistakes_fail_without_a_traceback(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    mistakes = [(["stage=training"], "Available options in 'stage':"),
                (["metric=snipp"], "snipp"),
                (["stage=precompute", 'stage.archs=["|bad~0|"]', "dataset=fake"], "malformed NB201"),
                (["stage=precompute", "+stage.limt=3"], "unknown setting stage.limt"),
                (["stage=precompute", "stage.archs=[]"], "leave stage.archs out"),
                (["search.t_bounds=[1,0]"], "search.t_bounds"),
                (["search.condnum=foo"], "unknown metric 'foo'"),
                (["seed=-1"], "seed=-1")]
    # Two at a time: each is mostly a process start.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: run_cli(*mistakes[i][0], f"hydra.run.dir={tmp_path / str(i)}"),
                                range(len(mistakes))))
    for (args, message), result in zip(mistakes, results):
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, args
    listed = results[0].stderr.split("Available options in 'stage':")[1].split("Config search path")[0].split()
    assert listed == yaml_options("stage")  # no schema entries offered as options


def test_relative_input_paths_work_from_the_launch_folder(tmp_path):
    import os

    from conftest import DATA

    relative_data = os.path.relpath(DATA, REPO)
    result = run_cli("stage=precompute", "dataset=fake", "probe.batch_size=4", "stage.limit=1",
                     "stage.metrics=[params]", f"paths.data_dir={relative_data}",
                     f"paths.results_dir={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    table = next((tmp_path / "results").glob("metric-tables/*/table.csv")).read_text().splitlines()
    assert len(table) == 2 and table[1].split(",")[0].isdigit()  # the official index came from the data folder
    assert (tmp_path / "run" / "precompute_summary.json").exists() and (tmp_path / "run" / "run.log").exists()
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
