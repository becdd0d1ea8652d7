"""HNAS's DARTS pool: the NTK trace norm and condition number per genotype, against one forward+backward of
the proxy network, and the projected time of the whole pool (issue 14).

    python perf/bench_darts_pool.py --genotypes 20 --device cpu
    python perf/bench_darts_pool.py --genotypes 200 --device cuda --workers 1 4 8      (on a GPU machine)

The genotypes are the first of HNAS's pool (seed 0); the network is the metric network NetworkCIFAR(16, 5)
and the probe batch 64 images (CIFAR-10 test images when $HNAS_DATA_DIR has them, else fake ones: the time
does not depend on the pixels). Prints, measured in this one run:
- per genotype, the seconds of `ntk_trace` + `condnum` (the engine, on a built network) and of one plain
  forward + backward of the summed true-class logits on the same network, and their ratio (goal <= 2);
- the metric source's seconds per genotype, network building included, with each number of workers, and
  the projected wall time of the 60,000-genotype pool at that rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POOL = 60_000
METRICS = ["ntk_trace", "condnum"]


def probe():
    from hnas import data

    dataset, split = ("cifar10", "test") if "test" in data.available_splits("cifar10") else ("fake", "train")
    return dataset, split, data.probe_batch(dataset, 64, seed=0, split=split)


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward(net, images, labels, device):
    start = time.perf_counter()
    net.train()
    net.zero_grad(set_to_none=True)
    net(images).gather(1, labels[:, None]).sum().backward()
    synchronize(device)
    return time.perf_counter() - start


def engine(net, images, labels, device):
    from hnas.metrics import compute_metrics

    start = time.perf_counter()
    compute_metrics(net, images, labels, METRICS)
    synchronize(device)
    return time.perf_counter() - start


def pool_rate(genotypes, dataset, split, device, workers):
    """Seconds per genotype of filling a fresh pool table through the metric source."""
    from hnas.metric_source import MetricSource
    from hnas.metric_table import TableSettings

    settings = TableSettings(space="darts", space_options={"ops": "hnas", "init_channels": 16, "layers": 5,
                                                           "network": "cifar"},
                             dataset=dataset, num_classes=10, batch_size=64, per_class=None, split=split, seed=0,
                             per_arch=False)
    with tempfile.TemporaryDirectory() as results:
        os.environ["HNAS_RESULTS_DIR"] = results
        source = MetricSource(settings, device, workers=workers)
        todo = source.todo(genotypes, METRICS)
        start = time.perf_counter()
        failed = [error for _, _, _, error in source.compute(todo) if error is not None]
        seconds = time.perf_counter() - start
    if failed:
        raise SystemExit(f"{len(failed)} genotypes failed: {failed[0]}")
    return seconds / len(genotypes)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genotypes", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from hnas.spaces import create_space

    device = torch.device(args.device)
    space = create_space("darts")
    genotypes = space.sample_distinct(args.genotypes, seed=0)
    dataset, split, (images, labels) = probe()
    images, labels = images.to(device), labels.to(device)
    print(f"{args.genotypes} genotypes of HNAS's pool on NetworkCIFAR(16, 5), probe batch 64 ({dataset} {split}), "
          f"{device}, {torch.get_num_threads()} torch threads")
    plain, metric = [], []
    for k, arch in enumerate(genotypes):
        net = space.build_seeded(arch, 0, num_classes=10).to(device)
        state = {name: v.clone() for name, v in net.state_dict().items()}
        if k == 0:  # warm-up: first calls allocate and (on CUDA) pick kernels
            forward_backward(net, images, labels, device)
            engine(net, images, labels, device)
            net.load_state_dict(state)
        plain.append(forward_backward(net, images, labels, device))
        net.load_state_dict(state)
        metric.append(engine(net, images, labels, device))
    fb, nt = statistics.median(plain), statistics.median(metric)
    print(f"median per genotype: forward+backward {fb * 1e3:.1f} ms, ntk_trace+condnum {nt * 1e3:.1f} ms, "
          f"ratio {nt / fb:.2f} (goal <= 2)")
    for workers in args.workers:
        rate = pool_rate(genotypes, dataset, split, device, workers)
        print(f"metric source, {workers} worker(s): {rate:.3f} s per genotype (building included); "
              f"projected {POOL:,} pool: {rate * POOL / 3600:.2f} h ({rate * POOL / 60:.1f} min)")


if __name__ == "__main__":
    main()
