"""The run's checkpoint, `checkpoint.pt` in the run folder, written (atomically) after every epoch: the
weights, optimizer, GradScaler, every process's random-number generators (python, numpy, torch, CUDA), the
epochs done, the per-epoch history and the settings it was trained with. Restoring it and training on gives
bitwise the same weights as a run that was never stopped (same device, processes and workers).

Only tensors and plain Python values are stored, so it loads with `torch.load(weights_only=True)`.
"""

import io
import random

import numpy as np
import torch

from hnas.errors import HnasError
from hnas.io import atomic_write_bytes

FILE = "checkpoint.pt"


def rng_state():
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path, state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path):
    """The checkpoint at `path`, or None if there is none."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a file we did not write (atomic writes leave no half-written one)
        raise HnasError(f"cannot read the checkpoint {path} ({error}); move it away to train from scratch") from error
