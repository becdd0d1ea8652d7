"""One GPU per job: slots taken under file locks (hnas.devices), checked with pretended GPUs (no GPU needed)."""

import multiprocessing
import os
import signal
import time

import pytest
import torch

from hnas import devices
from hnas.errors import HnasError

GPUS = ["GPU-aaaa", "GPU-bbbb", "GPU-cccc", "GPU-dddd"]
FORK = multiprocessing.get_context("fork")  # cheap children that already imported torch


def _job(folder, jobs_per_gpu, hold_s, out):
    gpu = devices.claim_gpu_slot(GPUS, jobs_per_gpu, folder, poll_s=0.01)
    start = time.monotonic()
    time.sleep(hold_s)
    out.put((gpu, start, time.monotonic()))


def _run_jobs(folder, n_jobs, jobs_per_gpu, hold_s=0.3):
    out = FORK.Queue()
    procs = [FORK.Process(target=_job, args=(folder, jobs_per_gpu, hold_s, out)) for _ in range(n_jobs)]
    for p in procs:
        p.start()
    spans = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return spans


def _most_at_once(spans, gpu):
    """The largest number of jobs that held `gpu` at the same instant."""
    events = sorted([(s, 1) for g, s, _ in spans if g == gpu] + [(e, -1) for g, _, e in spans if g == gpu],
                    key=lambda ev: (ev[0], ev[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_eight_jobs_over_four_gpus_never_share_one(tmp_path):
    spans = _run_jobs(tmp_path, n_jobs=8, jobs_per_gpu=1)
    assert sorted(g for g, _, _ in spans) == [0, 0, 1, 1, 2, 2, 3, 3]  # each GPU used, by two jobs in turn
    assert all(_most_at_once(spans, gpu) == 1 for gpu in range(len(GPUS)))


def test_jobs_per_gpu_lets_that_many_share_a_gpu(tmp_path):
    spans = _run_jobs(tmp_path, n_jobs=8, jobs_per_gpu=2, hold_s=1.0)
    assert all(_most_at_once(spans, gpu) == 2 for gpu in range(len(GPUS)))


def test_a_reused_worker_keeps_its_slot(tmp_path):
    """joblib runs several jobs in one worker process: the second claim is the slot the worker holds."""
    out = FORK.Queue()

    def twice():
        out.put((devices.claim_gpu_slot(GPUS, 1, tmp_path), devices.claim_gpu_slot(GPUS, 1, tmp_path)))

    p = FORK.Process(target=twice)
    p.start()
    first, second = out.get(timeout=60)
    p.join(timeout=60)
    assert first == second == 0


def test_a_killed_job_frees_its_slot(tmp_path):
    holder = FORK.Process(target=_job, args=(tmp_path, 1, 600, FORK.Queue()))
    holder.start()
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the holder has its lock once its file exists and it goes to sleep
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=60)
    [(gpu, _, _)] = _run_jobs(tmp_path, n_jobs=1, jobs_per_gpu=1, hold_s=0)
    assert gpu == 0  # the first slot is free again (while held, a claim got GPU 1: the test below)


def test_cpu_and_missing_gpu_are_not_slots(monkeypatch):
    assert devices.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(HnasError, match="no CUDA GPU is visible"):
        devices.resolve_device("cuda")


def test_cuda_takes_the_slot_of_its_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "_gpu_ids", lambda: GPUS)
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(devices, "_held", {})
    blocker = FORK.Process(target=_job, args=(tmp_path, 1, 30, FORK.Queue()))  # holds GPU 0
    blocker.start()
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("*.lock")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert devices.resolve_device("cuda") == torch.device("cuda", 1)
    finally:
        blocker.kill()
        blocker.join()
