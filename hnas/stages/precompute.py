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
import signal
import time

import torch
from tqdm import tqdm

from hnas import paths
from hnas.app import resolve_device
from hnas import data
from hnas.errors import HnasError
from hnas.io import atomic_write_json
from hnas.metric_table import MetricTable, TableSettings, official_index
from hnas.metrics import compute_metrics
from hnas.spaces import get_space

log = logging.getLogger(__name__)


# ---- one architecture --------------------------------------------------------------------------------------
def probe_batch_for(settings, arch=None):
    """The shared probe batch, or with `per_arch` a batch seeded by the architecture."""
    seed = settings.seed
    if settings.per_arch and arch is not None:
        seed = get_space(settings.space).arch_seed(settings.seed, arch)
    return data.probe_batch(settings.dataset, settings.batch_size, seed, per_class=settings.per_class,
                            split=settings.split)


def probe_record(settings, batch):
    """What a table records of its probe images: the split and files read, and the batch's SHA-256 (with
    `per_arch`, of the batch drawn with the probe seed itself, which stands for the data it is drawn from)."""
    images, labels = batch
    return {"split": settings.split, "source": data.source_of(settings.dataset, settings.split),
            "sha256": data.fingerprint(images, labels), "shape": list(images.shape)}


def open_for_writing(settings, device):
    """(table, shared batch or None with per_arch): the table of these settings, checked against (or
    created with) the probe batch this run computes on. Nothing is created before the batch exists."""
    batch = probe_batch_for(settings)
    table = MetricTable.for_probe(paths.results_dir(), settings, probe_record(settings, batch), device)
    return table, None if settings.per_arch else batch


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


# ---- workers -----------------------------------------------------------------------------------------------
_WORKER = {}


def _init_worker(settings, batch, device, threads):
    # Ctrl-C goes to the whole process group: the parent alone handles it (it saves the table and stops).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
        _WORKER.update(settings=settings, batch=batch, device=device)
        for item in todo:
            yield _work(item)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_worker, (settings, batch, device, threads)) as pool:
        yield from pool.imap_unordered(_work, todo, chunksize=1)


# ---- the stage ---------------------------------------------------------------------------------------------
def run(cfg, out_dir):
    """Fill the run's metric table (settings validated by hnas.config.validate before this is called)."""
    stage = cfg.stage
    metrics = list(dict.fromkeys(stage.metrics))
    settings = TableSettings.from_config(cfg)
    device = resolve_device(cfg.device)
    space = get_space(settings.space)
    archs = shard_of(select_archs(stage, settings), stage.shard, stage.num_shards)
    table = MetricTable.existing(paths.results_dir(), settings)
    todo = [(a, metrics if table is None else table.missing(a, metrics)) for a in archs]
    todo = [(a, needed) for a, needed in todo if needed]
    log.info("metric table %s: %d architectures in this run, %d already done, %d to compute (%s) on %s",
             MetricTable.folder_for(paths.results_dir(), settings), len(archs), len(archs) - len(todo),
             len(todo), ", ".join(metrics), device)
    start = time.perf_counter()
    done = failed = 0
    seconds_total = 0.0
    if todo:
        table, batch = open_for_writing(settings, device)
        done, failed, seconds_total = _compute(todo, table, settings, batch, device, stage, space, out_dir)
    csv_path = None
    if table is not None:
        csv_path = table.folder / "table.csv" if table.csv_is_current() else table.export_csv()
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


def _compute(todo, table, settings, batch, device, stage, space, out_dir):
    """Compute and log every (arch, metrics) of `todo`; (done, failed, summed seconds). On Ctrl-C the rows
    written so far are exported to table.csv before the interrupt goes on."""
    from torch.utils.tensorboard import SummaryWriter

    done = failed = 0
    seconds_total = 0.0
    events = SummaryWriter(log_dir=str(out_dir / "tb"))
    try:
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
    except KeyboardInterrupt:
        log.warning("interrupted after %d of %d architectures; they are saved in %s, a rerun resumes",
                    done, len(todo), table.export_csv())
        raise
    return done, failed, seconds_total


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
        self.table = MetricTable.existing(paths.results_dir(), self.settings)
        self.metric_seconds = 0.0
        self.computed = 0
        self._seen = set()
        self._batch = None
        self._writable = False

    def __call__(self, archs):
        missing = [a for a in dict.fromkeys(archs) if self.table is None or self.table.missing(a, self.names)]
        if missing:
            self._compute(missing)
        for arch in archs:
            if arch not in self._seen:
                self._seen.add(arch)
                self.metric_seconds += self.table.rows[arch]["seconds"]
        return {arch: {m: self.table.rows[arch]["metrics"][m] for m in self.names} for arch in archs}

    def _compute(self, archs):
        if not self._writable:
            try:
                self.table, self._batch = open_for_writing(self.settings, self.device)
            except HnasError as error:
                raise HnasError(f"{error}\n{SHIPPED_HINT}") from None
            self._writable = True
        log.info("computing %s for %d architectures missing from %s", ", ".join(self.names), len(archs),
                 self.table.folder)
        with self.table.writer() as writer:
            for arch in tqdm(archs, unit="arch", desc="metrics on demand", mininterval=1.0):
                needed = self.table.missing(arch, self.names)
                values, seconds = compute_arch(arch, self.settings, needed, self._batch, self.device)
                writer.write(arch, official_index(self.space, arch), values, seconds, self.device)
                self.computed += 1
                if self.computed == 1 and len(archs) > 1:
                    log.warning("%d architectures of this search have no %s in %s: about %.0f s at %.2f s each "
                                "(more at later steps). %s", len(archs), ", ".join(self.names), self.table.folder,
                                seconds * len(archs), seconds, SHIPPED_HINT)
        self.table.export_csv()


SHIPPED_HINT = ("The metric tables shipped with hnas need no computation: `python run.py experiment=hnas_nb201 "
                "metric=<name>` searches on them in seconds (docs/reproduce.md).")
