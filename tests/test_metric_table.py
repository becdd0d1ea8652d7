"""Metric tables never mix values computed differently and never lose rows: real files, real processes."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import DATA, REPO, configure, needs_data
from hnas.errors import HnasError
from hnas.metric_table import MetricTable, TableSettings
from hnas.stages import precompute

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def small_cifar10(root, first):
    """A data folder with 5 real CIFAR-10 test JPEGs per class (files `first`..`first + 4`) and the NB201 table."""
    for name in CLASSES:
        folder = root / "cifar10-test-jpg" / "test" / name
        folder.mkdir(parents=True)
        for k in range(first, first + 5):
            (folder / f"{k:04d}.jpg").symlink_to(DATA / "cifar10-test-jpg" / "test" / name / f"{k:04d}.jpg")
    if not (root / "nb201").exists():
        (root / "nb201").symlink_to(DATA / "nb201")
    return root


def run_precompute(data_dir, results_dir, *overrides):
    """(table settings, summary) of a precompute run on the data folder `data_dir`."""
    os.environ["HNAS_DATA_DIR"] = str(data_dir)
    try:
        cfg = configure("stage=precompute", "stage.metrics=[snip]", "probe.batch_size=8", *overrides)
        out = results_dir.parent / f"out{time.monotonic_ns()}"
        out.mkdir()
        summary = precompute.run(cfg, out)
        return TableSettings.from_config(cfg), summary  # the split it resolves to depends on the data folder
    finally:
        os.environ["HNAS_DATA_DIR"] = str(DATA)


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kwargs)


@needs_data
def test_rows_of_other_probe_images_are_refused(tmp_path, results_dir):
    data_dir = small_cifar10(tmp_path / "data", first=0)
    settings, _ = run_precompute(data_dir, results_dir, "stage.limit=2")
    folder = MetricTable.folder_for(results_dir, settings)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["probe"]["split"] == "test" and meta["probe"]["source"] == "image folder cifar10-test-jpg/test"
    assert folder.name.startswith("nb201-compact-cifar10-test-b8-")  # named by the split actually read

    # Other images under the same file names: the probe batch differs, so the table refuses new rows.
    for name in CLASSES:
        for k in range(5):
            link = data_dir / "cifar10-test-jpg" / "test" / name / f"{k:04d}.jpg"
            link.unlink()
            link.symlink_to(DATA / "cifar10-test-jpg" / "test" / name / f"{k + 100:04d}.jpg")
    with pytest.raises(HnasError, match="other probe images"):
        run_precompute(data_dir, results_dir, "stage.limit=3")
    assert len(MetricTable.existing(results_dir, settings).rows) == 2
    # Nothing left to compute needs no probe batch, so nothing is refused.
    run_precompute(data_dir, results_dir, "stage.limit=2")


@needs_data
def test_a_train_split_that_appears_opens_a_separate_table(tmp_path, results_dir):
    data_dir = small_cifar10(tmp_path / "data", first=0)
    settings, _ = run_precompute(data_dir, results_dir, "stage.limit=2")
    test_table = MetricTable.folder_for(results_dir, settings)
    batches = data_dir / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(batches / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, 20).tolist()}, f)
    settings, summary = run_precompute(data_dir, results_dir, "stage.limit=3")
    train_table = MetricTable.folder_for(results_dir, settings)
    assert train_table != test_table and "-train-" in train_table.name
    assert summary["computed"] == 3 and summary["already_done"] == 0
    assert len(pd.read_csv(test_table / "table.csv")) == 2


def test_rows_without_meta_are_not_adopted(tmp_path, results_dir):
    settings, _ = run_precompute(DATA, results_dir, "dataset=fake", "stage.limit=2")
    folder = MetricTable.folder_for(results_dir, settings)
    (folder / "meta.json").unlink()
    with pytest.raises(HnasError, match="rows have no meta.json"):
        run_precompute(DATA, results_dir, "dataset=fake", "stage.limit=3")


def test_a_sharded_sweep_with_the_joblib_launcher_exports_every_row(tmp_path):
    results = tmp_path / "results"
    result = cli("-m", "stage=precompute", "dataset=fake", "probe.batch_size=4", "stage.limit=8",
                 "stage.metrics=[snip]", "stage.num_shards=2", "stage.shard=0,1", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2", f"paths.results_dir={results}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 0, result.stderr
    table = next(results.glob("metric-tables/*/table.csv"))
    logs = list(table.parent.glob("rows-shard*of2.jsonl"))
    assert len(logs) == 2 and sum(len(p.read_text().splitlines()) for p in logs) == 8
    assert len(pd.read_csv(table)) == 8
    assert "result.json" not in result.stderr + result.stdout  # a precompute sweep is not a search sweep


def test_an_unwritable_results_folder_is_named_with_the_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("stage=precompute", "dataset=fake", "probe.batch_size=4", "stage.limit=1", "stage.metrics=[snip]",
                 f"paths.results_dir={blocker / 'results'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot write the metric table" in result.stderr and "paths.results_dir" in result.stderr


def test_a_rerun_with_nothing_to_compute_writes_nothing(tmp_path, results_dir):
    settings, _ = run_precompute(DATA, results_dir, "dataset=fake", "stage.limit=2")
    folder = MetricTable.folder_for(results_dir, settings)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    _, summary = run_precompute(DATA, results_dir, "dataset=fake", "stage.limit=2")
    assert summary["computed"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_ctrl_c_saves_the_table_and_exits_without_a_traceback(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "run.py", "stage=precompute", "dataset=fake", "probe.batch_size=8", "stage.limit=1000",
         "stage.metrics=[grad_norm,snip,ntk_trace]", f"paths.results_dir={results}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        # Ctrl-C's default action, whatever this process inherited (a shell's background job ignores SIGINT,
        # and so would the run: Python keeps an ignored SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 180
    rows = None
    while time.time() < deadline:
        rows = next(results.glob("metric-tables/*/rows.jsonl"), None)
        if rows and len(rows.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    done = len(rows.read_text().splitlines())
    # a loaded machine may let many rows through between the check above and the signal: the limit leaves room
    assert 2 <= done < 1000, "the run finished before it could be interrupted; raise stage.limit"
    assert len(pd.read_csv(rows.parent / "table.csv")) == done


def test_a_killed_shard_rerun_alone_completes_the_table_of_a_serial_run(tmp_path):
    """Shards of one table (as on several machines sharing a results folder): one is killed with SIGKILL
    mid-way and rerun alone; the merged table then holds exactly the serial run's values."""
    common = ["stage=precompute", "dataset=fake", "probe.batch_size=4", "stage.limit=12",
              "stage.metrics=[snip,grad_norm]"]
    serial, sharded = tmp_path / "serial", tmp_path / "sharded"
    assert cli(*common, f"paths.results_dir={serial}", f"hydra.run.dir={tmp_path / 'run-serial'}").returncode == 0
    shard = [*common, "stage.num_shards=2", f"paths.results_dir={sharded}"]
    assert cli(*shard, "stage.shard=0", f"hydra.run.dir={tmp_path / 'run-0'}").returncode == 0
    proc = subprocess.Popen([sys.executable, "run.py", *shard, "stage.shard=1", f"hydra.run.dir={tmp_path / 'run-1'}"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 180
    log = None
    while time.time() < deadline and proc.poll() is None:
        log = next(sharded.glob("metric-tables/*/rows-shard1of2.jsonl"), None)
        if log and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert log is not None and len(log.read_text().splitlines()) < 6, "shard 1 finished before it was killed"
    assert cli(*shard, "stage.shard=1", f"hydra.run.dir={tmp_path / 'run-1b'}").returncode == 0

    def values(results):
        frame = pd.read_csv(next(results.glob("metric-tables/*/table.csv")))
        return frame.drop(columns="seconds").sort_values("arch").reset_index(drop=True)

    pd.testing.assert_frame_equal(values(sharded), values(serial))
