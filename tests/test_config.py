import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from conftest import REPO, compose

GROUP_OPTIONS = {
    "space": ["nb201"],
    "dataset": ["cifar10", "cifar100", "imagenet16_120", "fake"],
    "stage": ["precompute", "search", "report"],
    "search": ["hnas", "random", "rea", "reinforce", "training_free"],
    "paths": ["default"],
}


def run_cli(*args):
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("group, option", [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts])
def test_every_group_option_composes(group, option):
    cfg = compose(f"{group}={option}")
    assert cfg[group].name if group != "paths" else cfg.paths.data_dir


def test_every_registered_metric_is_a_metric_option():
    from hnas.metrics import list_metrics

    names = list_metrics()
    assert {"grad_norm", "snip", "grasp", "ntk_trace", "condnum", "synflow", "params", "flops"} <= set(names)
    for name in names:
        assert compose(f"metric={name}").metric.name == name


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
    for text in ("space: nb201", "dataset: cifar10, cifar100, fake, imagenet16_120", "stage:", "search:",
                 "grad_norm", "ntk_trace", "precompute"):
        assert text in result.stdout, text


def test_cli_mistakes_fail_without_a_traceback():
    result = run_cli("stage=training")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    listed = result.stderr.split("Available options in 'stage':")[1].split("Config search path")[0].split()
    assert listed == ["precompute", "report", "search"]  # no schema entries offered as options
    result = run_cli("metric=snipp")
    assert result.returncode != 0 and "snipp" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("stage=precompute", 'stage.archs=["|bad~0|"]', "dataset=fake")
    assert result.returncode != 0 and "malformed NB201" in result.stderr and "Traceback" not in result.stderr
    for args, message in [(["stage=precompute", "+stage.limt=3"], "unknown setting stage.limt"),
                          (["stage=precompute", "stage.archs=[]"], "leave stage.archs out"),
                          (["search.t_bounds=[1,0]"], "search.t_bounds"),
                          (["search.condnum=foo"], "unknown metric 'foo'"),
                          (["seed=-1"], "seed=-1")]:
        result = run_cli(*args, "hydra.run.dir=/tmp/hnas-test-cli-mistakes")
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, args


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
