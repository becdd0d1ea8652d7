"""Sweep summary, paper table and budget figure, from constructed job folders."""

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from hnas.callbacks import SweepSummary
from hnas.oracles import NB201TableOracle
from hnas.reports.results import load_results, summarize_sweep
from hnas.reports.search_report import (best_so_far_curve, budget_figure, draw_budget_figure, optimum, paper_table,
                                       published_rows, run_report)
from hnas.search import run_search
from hnas.search.testing import constructed_problem
from hnas.stages.search import write_outputs

SETTINGS = [  # (search config, overrides without the seed)
    ({"name": "hnas", "scale": 2000.0, "queries": 8}, ["search=hnas", "metric=fake"]),
    ({"name": "random", "queries": 8}, ["search=random", "metric=fake"]),
    ({"name": "random", "queries": 8}, ["search=random", "metric=other"]),  # the same runs again
    ({"name": "random", "queries": 3}, ["search=random", "metric=fake", "search.queries=3"]),
    ({"name": "training_free"}, ["search=training_free", "metric=fake"]),
]
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep folder as Hydra lays it out: <sweep>/<job>/ with .hydra/ and the run's files; one failed job."""
    root = tmp_path_factory.mktemp("sweep")
    results, job = {}, 0
    for config, overrides in SETTINGS:
        for seed in SEEDS:
            problem, _ = constructed_problem(seed=seed, peak=100 + 20 * seed)
            result = run_search(config, problem)
            folder = root / f"{job}_{'_'.join(overrides)}_seed={seed}"
            (folder / ".hydra").mkdir(parents=True)
            write_outputs(result, folder, space="toy", overrides=[*overrides, f"seed={seed}"])
            results[(tuple(overrides), seed)] = result
            job += 1
    (root / "99_failed" / ".hydra").mkdir(parents=True)  # a job that died before writing result.json
    return root, results


def test_job_folders_hold_the_run_files(sweep):
    root, results = sweep
    folder = next(p for p in root.iterdir() if p.name.startswith("0_"))
    payload = json.loads((folder / "result.json").read_text())
    for key in ("arch", "index", "val_acc", "test_acc", "search_cost_s", "metric_s", "n_queries", "algorithm",
                "metric", "seed", "overrides", "search_config"):
        assert key in payload
    queries = pd.read_csv(folder / "queries.csv")
    tests = ["best_cifar10_test_acc_200ep", "best_cifar100_test_acc_200ep", "best_imagenet16_test_acc_200ep"]
    assert list(queries.columns) == ["step", "arch", "index", "t", "c", "score", "val_acc", "cost_s", "cum_cost_s",
                                     "best_arch", "best_index", "best_val_acc", *tests]
    assert len(queries) == payload["n_queries"] == 8
    assert payload["test_columns"] == NB201TableOracle.test_columns
    assert list(payload["test_acc"]) == ["cifar10", "cifar100", "ImageNet16-120"]
    assert payload["query"] == {"oracle": "nb201-table", "dataset": "cifar10-valid", "split": "valid", "epochs": 12}
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_summary_groups_settings_and_averages_seeds(sweep):
    root, results = sweep
    _, summary = summarize_sweep(root)
    assert list(summary.columns[:3]) == ["algorithm", "metric", "search.queries"]
    assert len(summary) == 4  # hnas, random, random with 3 queries, training_free
    assert set(summary["n_seeds"]) == {3}  # the metric=other random runs repeat metric=fake's: counted once
    row = summary[(summary.algorithm == "hnas")].iloc[0]
    assert row["metric"] == "fake" and row["search.queries"] == ""
    hnas = [results[(tuple(SETTINGS[0][1]), s)] for s in SEEDS]
    c10 = [r.test_acc["cifar10"] for r in hnas]
    assert row["cifar10_test_acc_200ep_mean"] == pytest.approx(np.mean(c10))
    assert row["cifar10_test_acc_200ep_std"] == pytest.approx(np.std(c10))
    assert row["search_cost_s_mean"] == pytest.approx(np.mean([r.search_cost_s for r in hnas]))
    assert row["metric_s_mean"] == pytest.approx(np.mean([r.metric_s for r in hnas]))
    assert row["seeds"] == "0 1 2"
    short = summary[summary["search.queries"] == "3"].iloc[0]
    assert short["algorithm"] == "random" and short["metric"] == "-" and short["n_queries_mean"] == 3
    tf = summary[summary.algorithm == "training_free"].iloc[0]
    assert tf["search_cost_s_mean"] == 0.0 and tf["n_queries_mean"] == 0


def _sweep_config(sweep_dir, stage):
    """The config Hydra passes to on_multirun_end: the sweep's, with its hydra node."""
    return OmegaConf.create({"stage": {"name": stage}, "hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_callback_writes_the_summary_into_the_sweep_folder(sweep, caplog):
    root, _ = sweep
    SweepSummary().on_multirun_end(_sweep_config(root, "search"))
    csv = pd.read_csv(root / "summary.csv")
    assert len(csv) == 4
    text = (root / "summary.md").read_text()
    assert "cifar10" in text and "±" in text and "hnas" in text
    # The search sweep's failed job is still reported.
    assert any("have no result.json" in m and "99_failed" in m for m in caplog.messages)


@pytest.mark.parametrize("stage", ["precompute", "report"])
def test_callback_leaves_sweeps_of_other_stages_alone(stage, tmp_path, caplog):
    # A precompute sweep: job folders with .hydra/ and a log, no result.json (precompute writes none).
    for job in range(3):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / "run.log").write_text("done\n")
    caplog.set_level("DEBUG")
    SweepSummary().on_multirun_end(_sweep_config(tmp_path, stage))
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "summary.md").exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The same folders as a search sweep: their jobs did fail.
    SweepSummary().on_multirun_end(_sweep_config(tmp_path, "search"))
    assert any("3 job folder(s)" in m and "have no result.json" in m for m in caplog.messages)


def _copy_run(source, target):
    target.mkdir(parents=True)
    for name in ("result.json", "queries.csv"):
        shutil.copy(source / name, target / name)
    return json.loads((target / "result.json").read_text())


def _without(result, key):
    return {k: v for k, v in result.items() if k != key}


def _test_acc(result, dataset, value):
    return {**result, "test_acc": {**result["test_acc"], dataset: value}}


BAD_RESULTS = {  # id: (how a good result.json is broken, what the warning must say)
    "empty": (lambda r: {}, "'algorithm' is missing"),
    "list": (lambda r: [], "it holds a JSON list, not an object"),
    "no-test-acc": (lambda r: _without(r, "test_acc"), "'test_acc' is missing or not an object"),
    "no-algorithm": (lambda r: _without(r, "algorithm"), "'algorithm' is missing or not a non-empty string"),
    "null-accuracy": (lambda r: _test_acc(r, "cifar100", None), "'test_acc.cifar100' is missing or not a number"),
    "text-accuracy": (lambda r: _test_acc(r, "cifar10", "93"), "'test_acc.cifar10' is missing or not a number"),
    "number-algorithm": (lambda r: {**r, "algorithm": 3}, "'algorithm' is missing or not a non-empty string"),
    "text-cost": (lambda r: {**r, "search_cost_s": "many"}, "'search_cost_s' is not a number"),
    "text-seed": (lambda r: {**r, "seed": "0"}, "'seed' is not an integer"),
    "text-overrides": (lambda r: {**r, "overrides": "seed=0"}, "'overrides' is not a list of strings"),
    "number-metric": (lambda r: {**r, "metric": 5}, "'metric' is not a string"),
    "no-test-columns": (lambda r: _without(r, "test_columns"), "'test_columns' is missing or not an object"),
    "number-column": (lambda r: {**r, "test_columns": {"cifar10": 1}}, "'test_columns' is missing or not an"),
    "text-query": (lambda r: {**r, "query": "cifar10-valid"}, "'query' is not an object"),
}


@pytest.mark.parametrize("case", BAD_RESULTS)
def test_reports_skip_result_files_that_lack_what_they_need(sweep, tmp_path, caplog, case):
    breaks, message = BAD_RESULTS[case]
    root, _ = sweep
    source = next(p for p in root.iterdir() if p.name.startswith("0_"))
    good = _copy_run(source, tmp_path / "runs" / "good")
    bad_dir = tmp_path / "runs" / "bad"
    payload = _copy_run(source, bad_dir)
    (bad_dir / "result.json").write_text(json.dumps(breaks(payload)))
    frame = load_results([tmp_path / "runs"]).frame
    assert frame["run_dir"].tolist() == [str((tmp_path / "runs" / "good").resolve())]
    assert frame["cifar10_test_acc_200ep"].tolist() == [good["test_acc"]["cifar10"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(bad_dir.resolve() / "result.json") in w and message in w for w in warnings), warnings
    # The whole report still runs on what is left.
    written = run_report([tmp_path / "runs"], tmp_path / "report", oracle=constructed_problem()[0].oracle)
    assert written["runs"] == 1 and (tmp_path / "report" / "budget_figure.png").is_file()


def test_runs_of_different_oracles_are_not_mixed_in_one_report(sweep, tmp_path):
    from hnas.errors import HnasError

    root, _ = sweep
    source = next(p for p in root.iterdir() if p.name.startswith("0_"))
    _copy_run(source, tmp_path / "a")
    other = _copy_run(source, tmp_path / "b")
    other["test_columns"] = {"cifar10": "cifar10_test_acc_90ep"}
    (tmp_path / "b" / "result.json").write_text(json.dumps(other))
    with pytest.raises(HnasError, match="runs of different oracles need separate reports"):
        run_report([tmp_path], tmp_path / "report")


def test_report_of_only_unusable_results_says_so(tmp_path):
    from hnas.errors import HnasError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text("{}")
    with pytest.raises(HnasError, match="no usable result.json"):
        run_report([tmp_path], tmp_path / "report")


def test_paper_table_with_optimum(sweep, tmp_path):
    root, _ = sweep
    problem, _ = constructed_problem()
    frame = paper_table(load_results([root]), tmp_path, best=optimum(problem.oracle))
    assert (tmp_path / "paper_table.csv").is_file()
    text = (tmp_path / "paper_table.md").read_text()
    assert "| HNAS (fake) |" in text and "| Random (queries=3) |" in text and "| Random |" in text
    assert "optimum" in text
    best = frame[frame.method == "optimum"].iloc[0]
    assert best["cifar10_test_acc_200ep_mean"] == 95.0  # val peaks at 100, cifar10 test = val - 5
    assert best["imagenet16_test_acc_200ep_mean"] == 50.0


def test_best_so_far_curve_is_a_step_function_of_cost(sweep):
    root, _ = sweep
    folder = next(p for p in root.iterdir() if p.name.startswith("0_"))
    queries = pd.read_csv(folder / "queries.csv")
    cum = queries["cum_cost_s"].to_numpy()
    budgets = [0.0, cum[0] - 1e-6, cum[0], cum[2] + 1.0, cum[-1], 1e9]
    curve = best_so_far_curve(folder, budgets)["cifar10"]
    best = queries["best_cifar10_test_acc_200ep"].to_numpy()
    assert np.isnan(curve[0]) and np.isnan(curve[1])
    assert curve[2:].tolist() == [best[0], best[2], best[-1], best[-1]]


def test_budget_figure_is_written_and_not_blank(sweep, tmp_path):
    import matplotlib.image

    root, _ = sweep
    problem, _ = constructed_problem()
    path = budget_figure(load_results([root]), tmp_path, best=optimum(problem.oracle), budget_max=1000.0)
    assert path.is_file() and path.stat().st_size > 20_000
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[1] > 1000 and pixels[..., :3].std() > 0.05


def test_run_report_from_sweep_and_single_run_folders(sweep, tmp_path):
    root, _ = sweep
    single = next(p for p in root.iterdir() if p.name.startswith("0_"))
    problem, _ = constructed_problem()
    written = run_report([root, single], tmp_path, oracle=problem.oracle)
    assert written["runs"] == 12  # the single run is part of the sweep: not counted twice
    for name in ("summary.csv", "summary.md", "paper_table.csv", "paper_table.md", "budget_figure.png"):
        assert (tmp_path / name).is_file()
    assert len(load_results([single])) == 1


# ----------------------------------------------------------------------------------------------------------
# Method labels and the figure's axes, on search runs over the real NB201 table


NB201_SETTINGS = {  # overrides without the seed: the label the paper table and the figure must show
    ("search=random", "search.queries=null", "search.budget_s=18000"): "Random",
    ("search=reinforce", "search.queries=null", "search.budget_s=18000"): "REINFORCE",
    ("search=rea",): "REA",
    ("search=rea", "search.budget_s=18000"): "REA (budget 18000 s)",
    ("search=rea", "search.queries=null", "search.budget_s=18000"): "REA (no query limit, budget 18000 s)",
    # Few HNAS queries keep the BO steps cheap; the lone grad_norm setting needs no override in its label.
    ("search=hnas", "metric=snip", "search.queries=6"): "HNAS (snip, queries=6)",
    ("search=hnas", "metric=snip", "search.queries=3"): "HNAS (snip, queries=3)",
    ("search=hnas", "metric=grad_norm", "search.queries=6"): "HNAS (grad_norm)",
    ("search=training_free", "metric=snip"): "Training-free (snip)",
    # Two combined metrics: each named with its components, not as 'agg' with an override
    ("search=training_free", "metric=agg", "metric.of=[snip,grad_norm]"): "Training-free (agg(snip,grad_norm))",
    ("search=training_free", "metric=agg", "metric.of=[snip,condnum]"): "Training-free (agg(snip,condnum))",
}


@pytest.fixture(scope="module")
def nb201_runs(tmp_path_factory):
    """Run folders of hnas.stages.search.run on the NB201 table, one per setting (averaging over seeds is the
    sweep fixture's part), with the overrides a Hydra run records; metric values: a noisy function of the
    12-epoch validation accuracy."""
    from conftest import configure

    from hnas.benchmarks.nb201 import load_table
    from hnas.search.testing import MetricDict
    from hnas.stages import search as stage

    table = load_table()
    acc = table.column("cifar10-valid", "valid", 12)
    snip = 1000.0 + 40.0 * acc + np.random.RandomState(0).normal(0.0, 200.0, len(acc))
    values = {a: {"snip": snip[i], "grad_norm": -snip[i], "condnum": 100.0} for i, a in enumerate(table.archs)}
    root = tmp_path_factory.mktemp("nb201-runs")
    with pytest.MonkeyPatch.context() as patch:
        for job, overrides in enumerate(NB201_SETTINGS):
            command = [*overrides, "seed=0"]
            patch.setattr(stage, "run_overrides", lambda command=command: command)
            stage.run(configure("stage=search", *command), root / str(job), oracle=NB201TableOracle(table=table),
                      metrics_of=MetricDict(values), tensorboard=False)
    return root, table


def test_paper_table_and_figure_name_methods_as_a_paper_does(nb201_runs, tmp_path):
    root, table = nb201_runs
    runs, best = load_results([root]), optimum(NB201TableOracle(table=table))
    frame = paper_table(runs, tmp_path, best=best)
    methods = frame[frame.method != "optimum"]
    assert sorted(methods.method) == sorted(NB201_SETTINGS.values())
    # The CSV keeps the settings apart: each label sits on the row of the overrides it was given for.
    for overrides, label in NB201_SETTINGS.items():
        given = dict(o.split("=") for o in overrides)
        row = methods[methods.method == label].iloc[0]
        assert row["algorithm"] == given["search"]
        assert row["metric"] == given.get("metric", "-")
        assert row["search.queries"] == given.get("search.queries", "")
        assert row["search.budget_s"] == given.get("search.budget_s", "")
    markdown = (tmp_path / "paper_table.md").read_text()
    assert all(f"| {label} |" in markdown for label in NB201_SETTINGS.values())
    assert "search=" not in markdown and "search." not in markdown and "metric.of" not in markdown
    # The figure's lines and legend carry the same labels.
    fig = draw_budget_figure(runs, best)
    for ax in fig.axes:
        lines = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert sorted(lines) == sorted([*NB201_SETTINGS.values(), "benchmark optimum"])
    (legend,) = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == sorted([*NB201_SETTINGS.values(),
                                                                        "benchmark optimum"])


def test_budget_figure_keeps_many_settings_apart_and_shows_their_final_errors(nb201_runs, tmp_path):
    """A paper sweep has more settings than ten colours: no two lines look alike, and the y range holds every
    setting's final error and the optimum (not the first queries' 90 %, which would squash them together)."""
    root, table = nb201_runs
    for job in list(root.iterdir()):  # the same runs again under 5 more settings
        if int(job.name) < 5:
            copy = tmp_path / f"copy-{job.name}"
            shutil.copytree(job, copy)
            result = json.loads((copy / "result.json").read_text())
            result["overrides"] = [*result["overrides"], "search.scale=500"]
            (copy / "result.json").write_text(json.dumps(result))
    runs = load_results([root, tmp_path])
    best = optimum(NB201TableOracle(table=table))
    fig = draw_budget_figure(runs, best)
    for ax, ds in zip(fig.axes, runs.test_columns):
        lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert len(lines) == len(NB201_SETTINGS) + 5 + 1  # and the optimum's line
        styles = {(line.get_color(), line.get_linestyle()) for line in lines}
        assert len(styles) == len(lines)
        low, high = ax.get_ylim()
        finals = [line.get_ydata()[-1] for line in lines]
        first_errors = max(np.nanmax(line.get_ydata()) for line in lines)
        assert low < min(finals) and low < 100.0 - best[ds] and max(finals) < high < first_errors


@pytest.mark.parametrize("budget_max", [1000.0, 18000.0, 20000.0, 200000.0])
def test_budget_figure_tick_labels_stay_apart(nb201_runs, budget_max):
    root, table = nb201_runs
    fig = draw_budget_figure(load_results([root]), optimum(NB201TableOracle(table=table)), budget_max=budget_max)
    fig.draw_without_rendering()
    for ax in fig.axes:
        shown = [(x, label) for x, label in zip(ax.get_xticks(), ax.get_xticklabels())
                 if 0 <= x <= budget_max and label.get_text()]
        assert len(shown) >= 3  # still a readable scale
        boxes = [label.get_window_extent() for _, label in shown]
        # Matplotlib's own ticks are 1 px apart at 18,000 s and overlap at 200,000 s.
        assert min(right.x0 - left.x1 for left, right in zip(boxes, boxes[1:])) > 10
        for x, label in shown:  # each label reads as its budget in seconds
            text = label.get_text()
            assert float(text[:-1]) * 1000 == x if text.endswith("k") else float(text) == x
        assert "(s" in ax.get_xlabel() and "(%)" in ax.get_ylabel()


def test_the_report_shows_the_published_rows_of_the_oracle_the_runs_queried(nb201_runs, tmp_path):
    root, _ = nb201_runs
    run_report([root], tmp_path / "report")
    markdown = (tmp_path / "report" / "paper_table.md").read_text()
    # RoBoT's Table 2 (10 runs, 3,051 s) and HNAS as it lists it, between the sweep's rows and the optimum.
    assert "| RoBoT (published) | 94.36 ± 0.00 | 73.51 ± 0.00 | 46.34 ± 0.00 | 3051 | - | 10 |" in markdown
    assert "| HNAS (published) | 94.04 ± 0.21 | 71.75 ± 1.04 | 45.91 ± 0.88 | 3010 | - | 10 |" in markdown
    lines = markdown.splitlines()
    assert lines.index(next(l for l in lines if l.startswith("| RoBoT (published)"))) < len(lines) - 1
    assert lines[-1].startswith("| optimum (benchmark)")
    frame = pd.read_csv(tmp_path / "report" / "paper_table.csv").set_index("method")
    assert frame.loc["RoBoT (published)", "cifar100_test_acc_200ep_mean"] == 73.51
    assert "ICLR 2024" in frame.loc["RoBoT (published)", "source"]
    # Only methods published on every dataset the runs report, and only for the oracle they queried.
    assert set(published_rows("nb201-table", ["cifar10", "cifar100"])) == {"HNAS", "RoBoT"}
    assert published_rows("nb201-table", ["cifar10", "svhn"]) == {}
    assert published_rows("some-other-oracle", ["cifar10"]) == {}
