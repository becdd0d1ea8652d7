"""The metric source: metric values of architectures, read from a metric table, the missing ones computed.

One object serves the precompute stage (fill a table for many architectures, in worker processes if asked)
and a search (look values up, computing what a candidate pool needs). Every network is built from a seed of
(probe seed, architecture) and all of them share the probe batch (or, with `per_arch`, get a batch seeded by
their architecture), so a value does not depend on order, process, shard or which of the two asked for it.
Computed rows go to the table (hnas.metric_table) as they come, so a kill loses at most the row in flight.
"""

import logging
import multiprocessing
import os
import signal
import time
from contextlib import closing

import torch

from hnas import data, paths
from hnas.allocator import keep_freed_memory, release_freed_memory
from hnas.errors import HnasError
from hnas.metric_table import MetricTable
from hnas.metrics import compute_metrics
from hnas.oracles import official_indexer

log = logging.getLogger(__name__)

SHIPPED_HINT = ("The metric tables shipped with hnas need no computation: `python run.py experiment=hnas_nb201 "
                "metric=<name>` searches on them in seconds (docs/reproduce.md).")


# ---- one architecture --------------------------------------------------------------------------------------
def probe_batch_for(settings, arch=None):
    """The shared probe batch, or with `per_arch` a batch seeded by the architecture."""
    seed = settings.seed
    if settings.per_arch and arch is not None:
        seed = settings.create_space().arch_seed(settings.seed, arch)
    return data.probe_batch(settings.dataset, settings.batch_size, seed, per_class=settings.per_class,
                            split=settings.split)


def probe_record(settings, batch):
    """What a table records of its probe images: the split and files read, and the batch's SHA-256 (with
    `per_arch`, of the batch drawn with the probe seed itself, which stands for the data it is drawn from)."""
    images, labels = batch
    return {"split": settings.split, "source": data.source_of(settings.dataset, settings.split),
            "sha256": data.fingerprint(images, labels), "shape": list(images.shape)}


def compute_arch(arch, settings, metrics, batch, device):
    """Metric values of one architecture and the seconds they took (building the network included)."""
    start = time.perf_counter()
    net = settings.create_space().build_seeded(arch, settings.seed, num_classes=settings.num_classes)
    net = net.to(device)
    if settings.per_arch:
        batch = probe_batch_for(settings, arch)
    inputs, targets = (t.to(device) for t in batch)
    values = compute_metrics(net, inputs, targets, list(metrics))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    del net
    release_freed_memory()  # the memory kept for this architecture's passes (hnas.allocator)
    return values, seconds


# ---- workers -----------------------------------------------------------------------------------------------
_WORKER = {}


def _init_worker(settings, batch, device, threads):
    # Ctrl-C goes to the whole process group: the parent alone handles it (it saves the table and stops).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()  # a spawned worker starts with glibc's defaults
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


# ---- the source --------------------------------------------------------------------------------------------
class MetricSource:
    """Metric values for the table of `settings` (hnas.metric_table.TableSettings) on `device`.

    `todo(archs, names)` says what is missing; `compute(todo)` computes it (in `workers` processes, each
    with cores // workers torch threads) and yields each (arch, values, seconds, error) after its row is
    written; `__call__(archs)` returns the values of `names` for `archs`, computing the missing ones, and adds
    up `metric_seconds`: the time of the computations that gave the values of `names` for every distinct
    architecture looked up, whether computed now or read from the table (whose rows record how long they
    took; MetricTable.seconds_for).
    """

    def __init__(self, settings, device, names=(), workers=1):
        self.settings, self.device, self.workers = settings, device, int(workers)
        self.names = list(dict.fromkeys(names))
        self.table = MetricTable.existing(paths.results_dir(), settings)
        self.metric_seconds = 0.0
        self.computed = 0
        self._seen = set()
        self._batch = None
        self._writable = False

    def todo(self, archs, names):
        """[(arch, metrics it lacks)] for the architectures of `archs` that lack any of `names`."""
        todo = [(a, list(names) if self.table is None else self.table.missing(a, names)) for a in archs]
        return [(a, needed) for a, needed in todo if needed]

    def _open_for_writing(self):
        # Nothing is created before the probe batch exists, and the batch must be the table's.
        if not self._writable:
            batch = probe_batch_for(self.settings)
            self.table = MetricTable.for_probe(paths.results_dir(), self.settings,
                                               probe_record(self.settings, batch), self.device, self.table)
            self._batch = None if self.settings.per_arch else batch
            self._writable = True

    def compute(self, todo, shard=0, num_shards=1, exclusive=False):
        """Compute every (arch, metrics) of `todo`, writing each row as it comes; yield (arch, values,
        seconds, error) per architecture (error: a message, values None). table.csv is rewritten at the end,
        also when the consumer stops early or Ctrl-C interrupts. `exclusive`: hold the log's lock
        (hnas.metric_table.RowWriter), failing at once where another precompute holds it."""
        self._open_for_writing()
        index_of = official_indexer(self.settings.space)  # one oracle for the whole run, not one per row
        with self.table.writer(shard, num_shards, exclusive) as writer:
            try:
                for arch, values, seconds, error in _results(todo, self.settings, self._batch, self.device,
                                                             self.workers):
                    if error is None:
                        writer.write(arch, index_of(arch), values, seconds, self.device)
                        self.computed += 1
                    yield arch, values, seconds, error
            finally:
                self.table.export_csv()

    def __call__(self, archs):
        todo = self.todo(dict.fromkeys(archs), self.names)
        if todo:
            self._compute_for_search(todo)
        for arch in archs:
            if arch not in self._seen:
                self._seen.add(arch)
                self.metric_seconds += self.table.seconds_for(arch, self.names)
        return {arch: {m: self.table.rows[arch]["metrics"][m] for m in self.names} for arch in archs}

    def _compute_for_search(self, todo):
        from tqdm import tqdm

        try:
            self._open_for_writing()
        except HnasError as error:
            raise HnasError(f"{error}\n{SHIPPED_HINT}") from None
        log.info("computing %s for %d architectures missing from %s", ", ".join(self.names), len(todo),
                 self.table.folder)
        with closing(self.compute(todo)) as results:
            bar = tqdm(results, total=len(todo), unit="arch", desc="metrics on demand", mininterval=1.0)
            for done, (arch, _, seconds, error) in enumerate(bar, 1):
                if error is not None:
                    raise HnasError(f"computing the metrics of {arch} failed: {error}")
                if done == 1 and len(todo) > 1:
                    log.warning("%d architectures of this search have no %s in %s: about %.0f s at %.2f s "
                                "each (more at later steps). %s", len(todo), ", ".join(self.names),
                                self.table.folder, seconds * len(todo), seconds, SHIPPED_HINT)
