"""The processes of one training run: one, or those `torchrun --nproc_per_node=N run.py stage=train ...`
starts (it sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address). NCCL joins them on GPUs, gloo on
CPUs. Rank 0 logs, writes the checkpoint and the results; the others only warn."""

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hnas.devices import resolve_device


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int
    device: torch.device

    @property
    def main(self):
        return self.rank == 0

    def barrier(self):
        if self.size > 1:
            dist.barrier()

    def sum(self, values):
        """The element-wise sum over all processes of a list of numbers."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def from_main(self, obj):
        """Rank 0's `obj` on every process."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj):
        """Every process's `obj`, in rank order, on every process."""
        if self.size == 1:
            return [obj]
        objs = [None] * self.size
        dist.all_gather_object(objs, obj)
        return objs

    def share_buffers(self, module):
        """Rank 0's BatchNorm statistics on every process, so all evaluate the same network (DDP only
        broadcasts them before each training forward)."""
        if self.size > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def start(device_name, jobs_per_gpu=1):
    """The World of this process, joining the others of a torchrun launch (whose LOCAL_RANK picks the GPU:
    hnas.devices.resolve_device)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name, jobs_per_gpu)
    if size == 1:
        return World(0, 0, 1, device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    return World(rank, local_rank, size, device)


def stop(world):
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
