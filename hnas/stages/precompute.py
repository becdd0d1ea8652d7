"""Precompute stage: metric tables for whole search spaces, a seeded sample, or a list of architectures.

`python run.py stage=precompute space=nb201 dataset=cifar10 stage.metrics=[snip,grad_norm]` fills the metric
table named by the run's settings (see hnas.metric_table) through the metric source (hnas.metric_source).
Work already in the table is skipped, so a rerun of a killed run resumes; `stage.shard=i stage.num_shards=n`
takes every n-th architecture, and shards write their own log files of the same table.
"""

import logging
import time
from contextlib import closing

import torch
from tqdm import tqdm

from hnas import paths
from hnas.devices import resolve_device
from hnas.errors import HnasError
from hnas.io import atomic_write_json
from hnas.metric_table import MetricTable, TableSettings
from hnas.metric_source import MetricSource

log = logging.getLogger(__name__)


def select_archs(stage_cfg, settings, seed):
    """The architectures of this run (before sharding), in a fixed order (settings checked by the schema):
    with `stage.limit=N`, the first N distinct ones the space draws with the run seed (DARTS: the pool HNAS
    searches with that seed)."""
    space = settings.create_space()
    if stage_cfg.archs:
        return list(dict.fromkeys(space.validate(a) for a in stage_cfg.archs))
    if stage_cfg.limit is not None:
        return space.sample_distinct(int(stage_cfg.limit), seed)
    return space.all_archs()


def run(cfg, out_dir):
    """Fill the run's metric table (settings validated by hnas.config.validate before this is called)."""
    stage = cfg.stage
    metrics = list(dict.fromkeys(stage.metrics))
    settings = TableSettings.from_config(cfg)
    device = resolve_device(cfg.device, cfg.jobs_per_gpu)
    source = MetricSource(settings, device, workers=stage.workers)
    archs = select_archs(stage, settings, cfg.seed)[stage.shard::stage.num_shards]
    todo = source.todo(archs, metrics)
    log.info("metric table %s: %d architectures in this run, %d already done, %d to compute (%s) on %s",
             MetricTable.folder_for(paths.results_dir(), settings), len(archs), len(archs) - len(todo),
             len(todo), ", ".join(metrics), device)
    start = time.perf_counter()
    done, failed, seconds_total = _compute(source, todo, stage, out_dir) if todo else (0, 0, 0.0)
    table = source.table
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


def _compute(source, todo, stage, out_dir):
    """Compute `todo` with a progress bar, periodic log lines and TensorBoard events; (done, failed, summed
    seconds). On Ctrl-C the rows so far are in table.csv (the source exports it) before the interrupt goes on."""
    from torch.utils.tensorboard import SummaryWriter

    done = failed = 0
    seconds_total = 0.0
    bar = tqdm(total=len(todo), unit="arch", desc="precompute", dynamic_ncols=True, mininterval=1.0)
    try:
        with SummaryWriter(log_dir=str(out_dir / "tb")) as events, bar, \
                closing(source.compute(todo, stage.shard, stage.num_shards, exclusive=True)) as results:
            for arch, _, seconds, error in results:
                bar.update()
                if error:
                    failed += 1
                    log.error("architecture %s failed: %s (it stays missing; a rerun retries it)", arch, error)
                    continue
                done += 1
                seconds_total += seconds
                events.add_scalar("precompute/seconds_per_arch", seconds, done)
                if done % stage.log_every == 0:
                    log.info("%d/%d architectures, %.3f s per architecture", done, len(todo), seconds_total / done)
    except KeyboardInterrupt:
        log.warning("interrupted after %d of %d architectures; they are saved in %s, a rerun resumes",
                    done, len(todo), source.table.folder / "table.csv")
        raise
    return done, failed, seconds_total
