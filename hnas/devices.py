"""The device a job computes on, and one GPU per job on a multi-GPU node.

Ray and SLURM (`gpus_per_task`) give each job its own GPU by setting CUDA_VISIBLE_DEVICES, so the job sees one
device. joblib and submitit_local start jobs that all see every GPU, and `hydra.job.num % n_gpus` collides
when jobs end at different times (../shared/DESIGN.md section 6). There a job takes a GPU slot: an exclusive
`flock` on one of `jobs_per_gpu` lock files per GPU, held until the process ends (the kernel releases it
even after kill -9), so no two running jobs hold the same slot. Lock files are named by the GPU's UUID, not
its index, so jobs that Ray or SLURM gave different GPUs (each seen as cuda:0) never wait for each other, and
`jobs_per_gpu` also holds on a one-GPU node.
"""

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from hnas.errors import HnasError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "HNAS_GPU_LOCK_DIR"
_held = {}  # lock folder -> (gpu, open lock file): a reused worker process (joblib's) keeps its slot


def lock_dir():
    """Node-local folder of the slot locks: $HNAS_GPU_LOCK_DIR, else one per user in the temp folder."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"hnas-gpu-slots-{os.getuid()}")


def claim_gpu_slot(gpus, jobs_per_gpu=1, folder=None, poll_s=0.2):
    """The position in `gpus` (ids, e.g. UUIDs, of the visible GPUs) of the GPU this process holds a slot of,
    waiting while every slot is taken. Slots fill GPU by GPU first (slot 0 of every GPU, then slot 1, ...),
    so jobs spread over the GPUs before they share one."""
    if not gpus or jobs_per_gpu < 1:
        raise HnasError(f"cannot claim a GPU slot among {len(gpus)} GPU(s) with jobs_per_gpu={jobs_per_gpu}")
    folder = Path(folder or lock_dir())
    if folder in _held:
        return _held[folder][0]
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for slot in range(jobs_per_gpu):
            for position, gpu in enumerate(gpus):
                handle = open(folder / f"{gpu}.slot{slot}.lock", "a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                _held[folder] = (position, handle)
                log.info("GPU slot %d of GPU %d (%s; %d visible GPU(s) x %d job(s) each; locks in %s)", slot,
                         position, gpu, len(gpus), jobs_per_gpu, folder)
                return position
        if not waited:
            log.info("all %d GPU slots are taken (%s); waiting for one", len(gpus) * jobs_per_gpu, folder)
            waited = True
        time.sleep(poll_s)


def _gpu_ids():
    return [str(getattr(torch.cuda.get_device_properties(i), "uuid", f"index{i}"))
            for i in range(torch.cuda.device_count())]


def resolve_device(name, jobs_per_gpu=1):
    """`auto` -> cuda when available, else cpu; `cuda` -> the GPU of this process's slot (under torchrun:
    its LOCAL_RANK). Asking for cuda without a GPU is an error, not a fallback."""
    name = getattr(name, "value", name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise HnasError("device=cuda was requested but no CUDA GPU is visible; use device=cpu or device=auto")
    if "LOCAL_RANK" in os.environ:  # torchrun: one process per GPU, chosen by the launcher
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return torch.device("cuda", claim_gpu_slot(_gpu_ids(), jobs_per_gpu))
