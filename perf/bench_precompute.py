"""Whole-space precompute throughput: architectures per second of the HNAS metric set through the precompute's
own path (hnas.metric_source.MetricSource), with 1, 2, 4, ... architectures in flight (worker processes
sharing the device), and how far the values are from the shipped CPU table.

    python perf/bench_precompute.py --archs 40 --workers 1 2 --device cpu
    python perf/bench_precompute.py --archs 400 --workers 1 4 8 16 --device cuda     (on a GPU machine)

Each setting fills a fresh metric table in a temporary results folder with the same architectures: the first
`--archs` rows of the shipped reference-layout table (so values can be compared with it). The probe batch is
that table's (64 CIFAR-10 test images) when $HNAS_DATA_DIR has the images, else a seeded batch of fake images
(then the comparison with the shipped values is skipped). Prints, per setting: architectures per second,
the ratio to one worker, and the largest relative difference of each metric to one worker's values (equal
values: the split of work changes nothing) and to the shipped CPU table. With --projected, the time the
whole NB201 space (15,625 architectures) would take at the best rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HNAS = ["grad_norm", "snip", "grasp", "ntk_trace", "condnum"]
SPACE_SIZE = 15_625


def settings_and_archs(n):
    from hnas import data, paths
    from hnas.metric_table import MetricTable, TableSettings

    folder = paths.embedded_dir() / "metric-tables" / "nb201-reference-cifar10-test-b64-seed0"
    shipped_settings = TableSettings(space="nb201", space_options={"layout": "reference"}, dataset="cifar10",
                                     num_classes=10, batch_size=64, per_class=None, split="test", seed=0,
                                     per_arch=False)
    shipped = MetricTable(folder, shipped_settings)
    archs = list(shipped.rows)[:n]
    if "test" in data.available_splits("cifar10"):
        return shipped_settings, archs, shipped
    return replace(shipped_settings, dataset="fake", split="train"), archs, None


def fill(settings, archs, device, workers):
    """(seconds, {arch: values}) of computing `archs` into a fresh table."""
    from hnas.metric_source import MetricSource

    with tempfile.TemporaryDirectory() as results:
        os.environ["HNAS_RESULTS_DIR"] = results
        source = MetricSource(settings, device, workers=workers)
        source.table = None  # compute every architecture, also those the shipped table of these settings has
        todo = source.todo(archs, HNAS)
        start = time.perf_counter()
        values = {arch: v for arch, v, _, error in source.compute(todo) if error is None}
        return time.perf_counter() - start, values


def largest_difference(values, reference):
    """{metric: largest |a - b| / max(|b|, 1e-12)} over the architectures both hold."""
    out = {}
    for metric in HNAS:
        diffs = [abs(v[metric] - reference[a][metric]) / max(abs(reference[a][metric]), 1e-12)
                 for a, v in values.items() if a in reference]
        out[metric] = max(diffs) if diffs else float("nan")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--projected", action="store_true", help="print the projected whole-space time")
    args = parser.parse_args()

    import torch

    device = torch.device(args.device)
    settings, archs, shipped = settings_and_archs(args.archs)
    print(f"{len(archs)} NB201 architectures (reference layout), HNAS set {', '.join(HNAS)}, probe "
          f"{settings.dataset} batch {settings.batch_size}, device {device}, torch {torch.__version__}, "
          f"{os.cpu_count()} cores")
    first = None
    best = 0.0
    for workers in args.workers:
        seconds, values = fill(settings, archs, device, workers)
        rate = len(values) / seconds
        best = max(best, rate)
        first = first or (rate, values)
        line = f"workers {workers:>2}: {rate:7.2f} arch/s ({rate / first[0]:.2f}x one worker)"
        line += "; vs one worker: " + ", ".join(f"{m} {d:.1e}" for m, d in largest_difference(values, first[1]).items())
        if shipped is not None:
            reference = {a: shipped.rows[a]["metrics"] for a in archs}
            line += "; vs shipped CPU table: " + ", ".join(
                f"{m} {d:.1e}" for m, d in largest_difference(values, reference).items())
        print(line, flush=True)
    if args.projected:
        print(f"projected whole space ({SPACE_SIZE:,} architectures) at {best:.2f} arch/s: "
              f"{SPACE_SIZE / best / 60:.1f} min")


if __name__ == "__main__":
    main()
