"""Sweeps through run.py: the summary survives failed and killed jobs, and lists them with their logs."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_sweep(tmp_path, *overrides):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=hnas_nb201", "metric=grad_norm", "search.queries=3",
         f"paths.results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={sweep}", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"})
    return proc, sweep


def test_a_failed_job_does_not_stop_the_sweep_and_is_listed_in_its_summary(tmp_path):
    proc, sweep = run_sweep(tmp_path, "seed=0,-1,1")  # seed=-1 fails the config check of its job
    assert proc.returncode != 0  # the sweep says it had a failure ...
    summary = pd.read_csv(sweep / "summary.csv")
    assert summary["seeds"].tolist() == ["0 1"]  # ... but the job after the failed one ran, and is summarised
    text = (sweep / "summary.md").read_text()
    failed = next(p.parent for p in sweep.rglob(".hydra") if "seed=-1" in p.parent.name)
    assert "1 job(s) without a result.json" in text
    assert f"`{failed}`" in text and f"`{failed / 'run.log'}`" in text
    assert "seed" in text.split(str(failed / "run.log"))[1]  # what went wrong, from the job's log


def test_a_killed_job_is_listed_as_unfinished_with_its_last_log_line(tmp_path):
    from hnas.reports.results import summarize_sweep, write_summary

    proc, sweep = run_sweep(tmp_path, "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    killed = next(p.parent for p in sweep.rglob(".hydra") if "seed=1" in p.parent.name)
    (killed / "result.json").unlink()  # as if kill -9 had hit it before its result was written
    runs, summary = summarize_sweep(sweep)
    _, md_path = write_summary(runs, summary, sweep)
    text = md_path.read_text()
    assert f"`{killed}`" in text and "unfinished: last logged" in text
    assert summary["seeds"].tolist() == ["0"]


def _summary_of(tmp_path, *launcher):
    proc, sweep = run_sweep(tmp_path, "metric=grad_norm,snip", "seed=0,1", *launcher)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len([p for p in sweep.rglob("result.json")]) == 4
    return pd.read_csv(sweep / "summary.csv").drop(columns=["wall_s_mean", "wall_s_std"], errors="ignore")


@pytest.fixture(scope="module")
def sequential_summary(tmp_path_factory):
    return _summary_of(tmp_path_factory.mktemp("basic"))


def test_local_processes_give_the_summary_of_a_sequential_sweep(tmp_path, sequential_summary):
    parallel = _summary_of(tmp_path, "hydra/launcher=processes", "hydra.launcher.n_jobs=2")
    pd.testing.assert_frame_equal(parallel, sequential_summary)


@pytest.mark.slow
def test_submitit_processes_give_the_summary_of_a_sequential_sweep(tmp_path, sequential_summary):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='needs pip install -e ".[slurm]"')
    parallel = _summary_of(tmp_path, "hydra/launcher=submitit_processes")
    pd.testing.assert_frame_equal(parallel, sequential_summary)


@pytest.mark.slow
def test_a_local_ray_cluster_gives_the_summary_of_a_sequential_sweep(tmp_path, sequential_summary):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='needs pip install -e ".[ray]"')
    parallel = _summary_of(tmp_path, "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.num_cpus=2")
    pd.testing.assert_frame_equal(parallel, sequential_summary)


def test_the_slurm_preset_writes_the_sbatch_script_of_one_job_array(tmp_path):
    """No cluster here: stand-ins for sbatch (which keeps the script submitit hands it, then refuses) and srun
    (which submitit looks for) let the real launcher write its real submission script."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='needs pip install -e ".[slurm]"')
    bin_dir, script = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\nfor last; do :; done\ncp "$last" "$CAPTURE"\n'
                                    'echo "sbatch: error: not a cluster" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=hnas_nb201", "metric=grad_norm,snip", "seed=0,1",
         "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.array_parallelism=3",
         "hydra.launcher.timeout_min=90", f"hydra.sweep.dir={sweep}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CAPTURE": str(script)})
    assert proc.returncode != 0 and "not a cluster" in proc.stderr  # submitted, and refused by the stand-in
    lines = script.read_text().splitlines()
    for option in ("--array=0-3%3", "--partition=gpu", "--gpus-per-task=1", "--cpus-per-task=8", "--time=90",
                   "--mem=32GB"):
        assert f"#SBATCH {option}" in lines, option
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)
