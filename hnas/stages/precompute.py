"""Precompute stage: metric tables for whole search spaces, a seeded sample, or a list of architectures.

`python run.py stage=precompute space=nb201 dataset=cifar10 stage.metrics=[snip,grad_norm]` fills the metric
table named by the run's settings (see hnas.metric_table). Work already in the table is skipped, so a rerun
of a killed run resumes; `stage.shard=i stage.num_shards=n` takes every n-th architecture, and shards write
their own log files of the same table. Every network is built from a seed of its own architecture and the
probe batch is the same for every architecture, so values do not depend on order, shard or process.
"""

import logging
import multiprocessing
import os
import time

import torch
from tqdm import tqdm

from hnas import paths
from hnas.app import resolve_device
from hnas.data import probe_batch
from hnas.errors import HnasError
from hnas.io import atomic_write_json
from hnas.metric_table import MetricTable, TableSettings
from hnas.metrics import compute_metrics, list_metrics
from hnas.spaces import get_space

log = logging.getLogger(__name__)


# ---- one architecture --------------------------------------------------------------------------------------
def probe_batch_for(settings, arch=None):
    """The shared probe batch, or with `per_arch` a batch seeded by the architecture."""
    seed = settings.seed
    if settings.per_arch:
        seed = get_space(settings.space).arch_seed(settings.seed, arch)
    return probe_batch(settings.dataset, settings.batch_size, seed, per_class=settings.per_class, split=settings.split)


def compute_arch(arch, settings, metrics, batch, device):
    """Metric values of one architecture and the seconds they took (building the network included)."""
    start = time.perf_counter()
    space = get_space(settings.space)
    net = space.build_seeded(arch, settings.seed, num_classes=settings.num_classes, layout=settings.layout)
    net = net.to(device)
    if settings.per_arch:
        batch = probe_batch_for(settings, arch)
    inputs, targets = (t.to(device) for t in batch)
    values = compute_metrics(net, inputs, targets, list(metrics))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return values, time.perf_counter() - start


# ---- what to compute ---------------------------------------------------------------------------------------
def select_archs(stage_cfg, settings):
    """The architectures of this run (before sharding), in a fixed order."""
    space = get_space(settings.space)
    if stage_cfg.archs:
        if stage_cfg.limit is not None:
            raise HnasError("set stage.archs or stage.limit, not both")
        return list(dict.fromkeys(space.validate(a) for a in stage_cfg.archs))
    if stage_cfg.limit is not None:
        return space.sample(int(stage_cfg.limit), settings.seed)
    return space.all_archs()


def shard_of(archs, shard, num_shards):
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise HnasError(f"stage.shard={shard} stage.num_shards={num_shards}: need 0 <= shard < num_shards")
    return archs[shard::num_shards]


def official_index(space, arch):
    try:
        return space.to_index(arch)
    except HnasError:
        return None  # no benchmark table: the row keeps its arch string only


# ---- workers -----------------------------------------------------------------------------------------------
_WORKER = {}


def _init_worker(settings, batch, device, threads):
    torch.set_num_threads(threads)
    _WORKER.update(settings=settings, batch=batch, device=device)


def _work(item):
    arch, needed = item
    try:
        values, seconds = compute_arch(arch, _WORKER["settings"], needed, _WORKER["batch"], _WORKER["device"])
        return arch, values, seconds, None
    except Exception as error:  # one failing architecture must not stop a day-long run
        return arch, None, 0.0, f"{type(error).__name__}: {error}"


def _results(todo, settings, batch, device, workers):
    if workers <= 1:
        _init_worker(settings, batch, device, torch.get_num_threads())
        for item in todo:
            yield _work(item)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_worker, (settings, batch, device, threads)) as pool:
        yield from pool.imap_unordered(_work, todo, chunksize=1)


# ---- the stage ---------------------------------------------------------------------------------------------
def run(cfg, out_dir):
    stage = cfg.stage
    metrics = list(dict.fromkeys(stage.metrics))
    unknown = [m for m in metrics if m not in list_metrics()]
    if unknown:
        raise HnasError(f"unknown metric(s) {unknown} in stage.metrics; choose from: {', '.join(list_metrics())}")
    settings = TableSettings.from_config(cfg)
    device = resolve_device(cfg.device)
    space = get_space(settings.space)
    table = MetricTable.for_settings(paths.results_dir(), settings, device)

    archs = shard_of(select_archs(stage, settings), stage.shard, stage.num_shards)
    todo = [(a, table.missing(a, metrics)) for a in archs]
    todo = [(a, needed) for a, needed in todo if needed]
    log.info("metric table %s: %d architectures in this run, %d already done, %d to compute (%s) on %s",
             table.folder, len(archs), len(archs) - len(todo), len(todo), ", ".join(metrics), device)

    batch = None if settings.per_arch else probe_batch_for(settings)
    done = failed = 0
    seconds_total = 0.0
    start = time.perf_counter()
    from torch.utils.tensorboard import SummaryWriter

    events = SummaryWriter(log_dir=str(out_dir / "tb"))
    with events, table.writer(stage.shard, stage.num_shards) as writer, tqdm(
        total=len(todo), unit="arch", desc="precompute", dynamic_ncols=True, mininterval=1.0
    ) as bar:
        for arch, values, seconds, error in _results(todo, settings, batch, device, stage.workers):
            bar.update()
            if error:
                failed += 1
                log.error("architecture %s failed: %s (it stays missing; a rerun retries it)", arch, error)
                continue
            writer.write(arch, official_index(space, arch), values, seconds, device)
            done += 1
            seconds_total += seconds
            events.add_scalar("precompute/seconds_per_arch", seconds, done)
            if done % stage.log_every == 0:
                log.info("%d/%d architectures, %.3f s per architecture", done, len(todo), seconds_total / done)
    csv_path = table.export_csv()
    wall = time.perf_counter() - start
    summary = {
        "table": str(csv_path), "metrics": metrics, "archs_in_run": len(archs), "computed": done,
        "failed": failed, "already_done": len(archs) - len(todo), "wall_seconds": wall,
        "seconds_per_arch": seconds_total / done if done else None, "device": str(device),
        "workers": stage.workers, "torch_threads": torch.get_num_threads(),
    }
    atomic_write_json(out_dir / "precompute_summary.json", summary)
    log.info("done: %d computed, %d failed, %d already in the table; %.1f s wall, %s s per architecture; table %s",
             done, failed, summary["already_done"], wall,
             f"{summary['seconds_per_arch']:.3f}" if done else "-", csv_path)
    if failed:
        raise HnasError(f"{failed} architecture(s) failed (see the log in {out_dir}); rerun to retry them")
    return summary


class MetricLookup:
    """Metric values for a search: read from the run's metric table, computing missing ones on demand.

    `metric_seconds` adds up the computation time of every distinct architecture looked up, whether it was
    computed now or read from the table (whose rows record how long they took).
    """

    def __init__(self, cfg, names):
        self.names = list(dict.fromkeys(names))
        self.settings = TableSettings.from_config(cfg)
        self.device = resolve_device(cfg.device)
        self.space = get_space(self.settings.space)
        self.table = MetricTable.for_settings(paths.results_dir(), self.settings, self.device)
        self.metric_seconds = 0.0
        self.computed = 0
        self._seen = set()
        self._batch = None

    def __call__(self, archs):
        missing = [a for a in dict.fromkeys(archs) if self.table.missing(a, self.names)]
        if missing:
            self._compute(missing)
        for arch in archs:
            if arch not in self._seen:
                self._seen.add(arch)
                self.metric_seconds += self.table.rows[arch]["seconds"]
        return {arch: {m: self.table.rows[arch]["metrics"][m] for m in self.names} for arch in archs}

    def _compute(self, archs):
        if self._batch is None and not self.settings.per_arch:
            self._batch = probe_batch_for(self.settings)
        log.info("computing %s for %d architectures missing from %s", ", ".join(self.names), len(archs),
                 self.table.folder)
        with self.table.writer() as writer:
            for arch in tqdm(archs, unit="arch", desc="metrics on demand", mininterval=1.0):
                needed = self.table.missing(arch, self.names)
                values, seconds = compute_arch(arch, self.settings, needed, self._batch, self.device)
                writer.write(arch, official_index(self.space, arch), values, seconds, self.device)
                self.computed += 1
        self.table.export_csv()
