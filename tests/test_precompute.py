import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, configure
from hnas import metric_source
from hnas.benchmarks.nb201 import load_table
from hnas.errors import HnasError
from hnas.metric_table import MetricTable, TableSettings
from hnas.spaces import create_space
from hnas.stages import precompute

CHEAP = "stage.metrics=[grad_norm,snip,params]"
COMMON = ("stage=precompute", "dataset=fake", "probe.batch_size=8", CHEAP)
METRIC_COLUMNS = ["grad_norm", "snip", "params"]


def run_stage(tmp_path, *overrides):
    """What `run.py` does: the typed config, then the stage."""
    cfg = configure(*COMMON, *overrides)
    out = tmp_path / f"out{time.monotonic_ns()}"
    out.mkdir()
    precompute.run(cfg, out)
    return cfg


def table_of(cfg, results_dir):
    settings = TableSettings.from_config(cfg)
    return MetricTable.existing(results_dir, settings).frame()


def test_precompute_writes_table_with_sidecar(tmp_path, results_dir):
    cfg = run_stage(tmp_path, "stage.limit=4")
    folder = results_dir / "metric-tables" / TableSettings.from_config(cfg).name
    frame = pd.read_csv(folder / "table.csv")
    assert list(frame.columns) == ["index", "arch", *sorted(METRIC_COLUMNS), "seconds"]
    assert sorted(frame["arch"]) == sorted(create_space("nb201").sample_distinct(4, seed=0))
    assert (frame["seconds"] > 0).all()
    bench = load_table()
    assert all(frame["index"][i] == bench.index_of(a) for i, a in enumerate(frame["arch"]))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["settings"]["batch_size"] == 8 and meta["settings"]["dataset"] == "fake"
    assert meta["versions"]["torch"] and meta["torch_threads"] >= 1 and meta["device"] == "cpu"
    # The probe record is the hash of the images and labels the networks saw, recomputed here by hand.
    images, labels = metric_source.probe_batch_for(TableSettings.from_config(cfg))
    digest = hashlib.sha256(images.numpy().astype("<f4").tobytes() + labels.numpy().astype("<i8").tobytes())
    assert meta["probe"]["sha256"] == digest.hexdigest()
    assert meta["probe"]["split"] == "train" and "FakeData" in meta["probe"]["source"]


def test_rerun_skips_done_work_and_adds_new_metrics(tmp_path, results_dir):
    cfg = run_stage(tmp_path, "stage.limit=3")
    first = table_of(cfg, results_dir)
    run_stage(tmp_path, "stage.limit=3")  # nothing to do
    assert len(list((results_dir / "metric-tables").glob("*/rows*.jsonl"))) == 1
    lines = next((results_dir / "metric-tables").glob("*/rows.jsonl")).read_text().splitlines()
    assert len(lines) == 3
    run_stage(tmp_path, "stage.limit=3", "stage.metrics=[l2_norm]")
    both = table_of(cfg, results_dir)
    assert both["l2_norm"].notna().all()
    pd.testing.assert_frame_equal(first[METRIC_COLUMNS], both[METRIC_COLUMNS])


def test_shards_merge_into_the_unsharded_table(tmp_path, results_dir, monkeypatch):
    cfg = run_stage(tmp_path, "stage.limit=6")
    whole = table_of(cfg, results_dir)
    sharded_dir = tmp_path / "sharded"
    monkeypatch.setenv("HNAS_RESULTS_DIR", str(sharded_dir))
    for shard in range(3):
        run_stage(tmp_path, "stage.limit=6", f"stage.shard={shard}", "stage.num_shards=3")
    merged = table_of(cfg, sharded_dir)
    assert len(list(sharded_dir.glob("metric-tables/*/rows-shard*of3.jsonl"))) == 3
    pd.testing.assert_frame_equal(whole.drop(columns="seconds"), merged.drop(columns="seconds"))


def test_worker_processes_give_the_same_table(tmp_path, results_dir, monkeypatch):
    cfg = run_stage(tmp_path, "stage.limit=4")
    serial = table_of(cfg, results_dir)
    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path / "parallel"))
    run_stage(tmp_path, "stage.limit=4", "stage.workers=2")
    parallel = table_of(cfg, tmp_path / "parallel")
    pd.testing.assert_frame_equal(serial.drop(columns="seconds"), parallel.drop(columns="seconds"))


def test_kill_and_rerun_resumes_to_the_uninterrupted_table(tmp_path, results_dir):
    overrides = [*COMMON, "stage.limit=10", f"paths.results_dir={tmp_path / 'killed'}",
                 f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "run.py", *overrides], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = None
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = next((tmp_path / "killed").glob("metric-tables/*/rows.jsonl"), None)
        if rows and len(rows.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert rows is not None
    done_before = len(rows.read_text().splitlines())
    assert done_before < 10, "the run finished before it could be killed; raise stage.limit"
    with open(rows, "a") as f:  # a kill in the middle of a write leaves a partial line
        f.write('{"arch": "|nor_conv_3x3~0|+|no')
    subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = configure(*COMMON, "stage.limit=10")
    resumed = table_of(cfg, tmp_path / "killed")
    assert len(rows.read_text().splitlines()) == 10  # each architecture computed once, partial line gone
    run_stage(tmp_path, "stage.limit=10")
    uninterrupted = table_of(cfg, results_dir)
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), uninterrupted.drop(columns="seconds"))


def test_corrupt_and_foreign_tables_are_reported(tmp_path, results_dir):
    cfg = run_stage(tmp_path, "stage.limit=2")
    settings = TableSettings.from_config(cfg)
    folder = results_dir / "metric-tables" / settings.name
    rows = folder / "rows.jsonl"
    good = rows.read_text()
    rows.write_text("this is not json\n" + good)
    with pytest.raises(HnasError, match="corrupt or foreign.*line 1"):
        run_stage(tmp_path, "stage.limit=2")
    rows.write_text(good.replace("|", "/", 1))
    with pytest.raises(HnasError, match="corrupt or foreign"):
        MetricTable(folder, settings)
    with pytest.raises(HnasError, match="line 2 is not a valid row.*official index"):
        index = json.loads(good.splitlines()[1])["index"]
        rows.write_text(good.replace(f'"index": {index}', f'"index": {(index + 1) % 15625}'))
        MetricTable(folder, settings)
    for bad_index in ('"abc"', "99999", "true", "1.5"):
        rows.write_text(good.replace('"index": ', f'"index": {bad_index}, "was": ', 1))
        with pytest.raises(HnasError, match="line 1 is not a valid row.*index"):
            MetricTable(folder, settings)
    rows.write_text(good.replace('"seconds": ', '"seconds": "fast", "was": ', 1))
    with pytest.raises(HnasError, match="line 1 is not a valid row.*seconds"):
        MetricTable(folder, settings)
    rows.write_text(good)
    meta = json.loads((folder / "meta.json").read_text())
    meta["settings"]["batch_size"] = 256
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(HnasError, match="settings"):
        run_stage(tmp_path, "stage.limit=2")
    (folder / "meta.json").write_text("{broken")
    with pytest.raises(HnasError, match="not valid JSON"):
        run_stage(tmp_path, "stage.limit=2")


@pytest.mark.parametrize("overrides, message", [
    (["stage.limit=2", "stage.shard=3", "stage.num_shards=2"], "stage.shard=3"),
    (["stage.archs=[\"|nor_conv_3x3~0|\"]"], "malformed NB201"),
    (["stage.limit=2", "stage.metrics=[snipp]"], "unknown metric"),
    (["stage.metrics=[]"], "stage.metrics"),
    (["stage.archs=[]"], "leave stage.archs out"),
    (["+stage.limt=3"], "unknown setting stage.limt"),
    (["stage.limit=0"], "stage.limit"),
    (["stage.limit=2", "stage.log_every=0"], "stage.log_every"),
    (["stage.limit=2", "stage.workers=0"], "stage.workers"),
    (["stage.limit=2", "seed=-1"], "seed=-1"),
    (["stage.limit=2", "probe.seed=-2"], "probe.seed"),
    (["stage.limit=2", "probe.batch_size=0"], "probe.batch_size"),
    (["stage.limit=2", "probe.batch_size=-3"], "probe.batch_size"),
    (["stage.limit=2", "probe.per_class=0"], "probe.per_class"),
    (["stage.limit=2", "probe.split=valid"], "probe.split"),
    (["stage.limit=2", "dataset.num_classes=5"], "dataset.num_classes=5"),
])
def test_bad_settings_fail_before_anything_is_created(tmp_path, results_dir, overrides, message):
    with pytest.raises(HnasError, match=message.replace("[", r"\[")):
        run_stage(tmp_path, *overrides)
    assert not results_dir.exists()


def test_a_batch_larger_than_the_dataset_leaves_no_folder(tmp_path, results_dir):
    with pytest.raises(HnasError, match="between 1 and the dataset size"):
        run_stage(tmp_path, "stage.limit=2", "probe.batch_size=100000")
    assert not results_dir.exists()


def test_metric_lookup_reads_the_table_and_computes_missing(tmp_path, results_dir):
    cfg = run_stage(tmp_path, "stage.limit=2")
    known = create_space("nb201").sample_distinct(2, seed=0)
    fresh = create_space("nb201").sample_distinct(3, seed=99)[0]
    lookup = metric_source.MetricSource(TableSettings.from_config(configure(*COMMON)), torch.device("cpu"),
                                        ["snip", "grad_norm"])
    values = lookup([*known, fresh])
    table = table_of(cfg, results_dir).set_index("arch")
    for arch in known:
        assert values[arch]["snip"] == table.loc[arch, "snip"]
    assert lookup.computed == 1 and fresh in table_of(cfg, results_dir)["arch"].tolist()
    assert lookup.metric_seconds == pytest.approx(table_of(cfg, results_dir)["seconds"].sum())


def test_a_search_is_charged_for_the_computations_of_its_own_metrics(tmp_path, results_dir):
    """A column added to the table later (another precompute's lines) does not change what a search on the
    earlier columns is charged; a search on both is charged for both computations."""
    archs = create_space("nb201").sample_distinct(2, seed=0)
    settings = TableSettings.from_config(configure(*COMMON))

    def charged(names):
        lookup = metric_source.MetricSource(settings, torch.device("cpu"), names)
        lookup(archs)
        return lookup.metric_seconds

    cfg = run_stage(tmp_path, "stage.limit=2")
    before = charged(["snip"])
    assert before == pytest.approx(table_of(cfg, results_dir)["seconds"].sum())
    run_stage(tmp_path, "stage.limit=2", "stage.metrics=[synflow]")
    lines = [json.loads(line) for line in next((results_dir / "metric-tables").glob("*/rows.jsonl")).open()]
    added = sum(row["seconds"] for row in lines if "synflow" in row["metrics"])
    assert added > 0 and charged(["snip"]) == before and charged(["synflow"]) == pytest.approx(added)
    assert charged(["snip", "synflow"]) == pytest.approx(before + added)


def test_a_second_precompute_of_the_same_log_stops_at_once(tmp_path, results_dir):
    cfg = run_stage(tmp_path, "stage.limit=2")
    settings = TableSettings.from_config(cfg)
    log = next((results_dir / "metric-tables").glob("*/rows.jsonl"))
    with MetricTable.existing(results_dir, settings).writer(exclusive=True):  # what a running precompute holds
        with pytest.raises(HnasError, match=r"(?s)another precompute is writing .*rows\.jsonl.*stage\.shard"):
            run_stage(tmp_path, "stage.limit=4")
        assert len(log.read_text().splitlines()) == 2  # the refused run computed nothing
        # Another shard's log is free, and a search adds its few missing rows beside the precompute.
        run_stage(tmp_path, "stage.limit=3", "stage.shard=0", "stage.num_shards=2")
        fresh = create_space("nb201").sample_distinct(3, seed=99)[0]
        metric_source.MetricSource(settings, torch.device("cpu"), ["snip"])([fresh])
        assert len(log.read_text().splitlines()) == 3
    run_stage(tmp_path, "stage.limit=4")  # the lock ends with its writer
    assert len(table_of(cfg, results_dir)) == 5


def test_correlation_report_on_a_small_table(tmp_path):
    from hnas.oracles import create_oracle
    from hnas.reports.correlation import correlation_report

    oracle = create_oracle("nb201-table")
    bench = oracle.table
    archs = create_space("nb201").sample_distinct(40, seed=2)
    index = [bench.index_of(a) for a in archs]
    truth = bench.column("cifar10", "test", 200)[index]
    frame = pd.DataFrame({"index": index, "arch": archs, "oracle": truth, "anti": -truth, "constant": 7.0,
                          "partial": np.where(np.arange(40) < 25, truth, np.nan), "seconds": 1.0})
    corr = correlation_report(frame, oracle, ["oracle", "anti", "constant", "partial"], tmp_path)
    row = corr.set_index(["metric", "target"])
    assert row.loc[("oracle", "cifar10 test 200ep"), "spearman"] == pytest.approx(1.0)
    assert row.loc[("anti", "cifar10 test 200ep"), "kendall"] == pytest.approx(-1.0)
    assert 0 < row.loc[("oracle", "cifar100 test 200ep"), "spearman"] < 1
    assert corr[corr.metric == "constant"][["spearman", "kendall"]].isna().all().all()
    text = (tmp_path / "correlation.md").read_text()
    assert (tmp_path / "correlation.csv").exists() and "| oracle | 40 |" in text and "| partial | 25 |" in text
    assert "The table has 40 architectures" in text
    assert (tmp_path / "scatter.png").stat().st_size > 10_000


def test_search_can_draw_only_from_a_precomputed_table(tmp_path):
    import json

    from hnas.stages import search

    run_stage(tmp_path, "stage.limit=6", "stage.metrics=[grad_norm,condnum]")
    cfg = configure("stage=search", "search=hnas", "metric=grad_norm", "dataset=fake", "probe.batch_size=8",
                  "search.universe=metric_table", "search.queries=4", "search.n_sample=5")
    out = tmp_path / "search"
    search.run(cfg, out, tensorboard=False)
    queried = json.loads((out / "result.json").read_text())
    archs = set(pd.read_csv(out / "queries.csv")["arch"])
    assert len(archs) == 4 and archs <= set(create_space("nb201").sample_distinct(6, seed=0))
    assert queried["arch"] in archs
    with pytest.raises(HnasError, match="no metric table for these settings"):
        search.run(configure("stage=search", "metric=snip", "dataset=fake", "search.universe=metric_table"), out)


def test_correlation_stage_reads_the_table_of_its_settings(tmp_path):
    from hnas.stages import report

    cfg = configure("stage=report", "stage.kind=correlation", *COMMON[1:3])
    with pytest.raises(HnasError, match="no metric table for these settings"):
        report.run(cfg, tmp_path)
    run_stage(tmp_path, "stage.limit=4")
    corr = report.run(cfg, tmp_path)
    assert set(corr["metric"]) == set(METRIC_COLUMNS) and (tmp_path / "correlation.md").exists()
    with pytest.raises(HnasError, match="no column"):
        report.run(configure("stage=report", "stage.kind=correlation", "stage.metrics=[synflow]", *COMMON[1:3]),
                   tmp_path)
