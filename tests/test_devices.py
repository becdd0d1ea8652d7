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


def _job(folder, jobs_per_gpu, hold_s, out, claimed, together):
    """Claim a slot, then hold it for `hold_s` once `together` jobs have claimed theirs: the jobs that are
    meant to hold slots at the same time do so however slowly a loaded machine starts them."""
    gpu = devices.claim_gpu_slot(GPUS, jobs_per_gpu, folder, poll_s=0.01)
    with claimed.get_lock():
        claimed.value += 1
    _wait_for_claims(claimed, together)
    start = time.monotonic()
    time.sleep(hold_s)
    out.put((gpu, start, time.monotonic()))


def _wait_for_claims(claimed, n):
    """Wait (at most 120 s) until `n` jobs have claimed a slot; True when they have."""
    deadline = time.monotonic() + 120
    while claimed.value < n and time.monotonic() < deadline:
        time.sleep(0.005)
    return claimed.value >= n


def _start_holder(folder, hold_s):
    """A process that holds slot 0 of GPU 0 for `hold_s`, returned once it holds it."""
    claimed = FORK.Value("i", 0)
    holder = FORK.Process(target=_job, args=(folder, 1, hold_s, FORK.Queue(), claimed, 1))
    holder.start()
    assert _wait_for_claims(claimed, 1), "the holder process did not claim a slot within 120 s"
    return holder


def _run_jobs(folder, n_jobs, jobs_per_gpu, hold_s=0.3):
    """(gpu, start, end) of each of `n_jobs` jobs; the first len(GPUS) * jobs_per_gpu hold their slots together."""
    out, claimed = FORK.Queue(), FORK.Value("i", 0)
    together = min(n_jobs, len(GPUS) * jobs_per_gpu)
    procs = [FORK.Process(target=_job, args=(folder, jobs_per_gpu, hold_s, out, claimed, together))
             for _ in range(n_jobs)]
    for p in procs:
        p.start()
    spans = [out.get(timeout=240) for _ in procs]
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
    assert len(spans) == 8 and {g for g, _, _ in spans} == {0, 1, 2, 3}  # the first four spread over all GPUs
    assert all(_most_at_once(spans, gpu) == 1 for gpu in range(len(GPUS)))


def test_jobs_per_gpu_lets_that_many_share_a_gpu(tmp_path):
    spans = _run_jobs(tmp_path, n_jobs=8, jobs_per_gpu=2)
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
    holder = _start_holder(tmp_path, hold_s=600)
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
    blocker = _start_holder(tmp_path, hold_s=30)  # holds GPU 0
    try:
        assert devices.resolve_device("cuda") == torch.device("cuda", 1)
    finally:
        blocker.kill()
        blocker.join()
