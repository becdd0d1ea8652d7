"""Speed and memory of the metric engine, relative to one forward+backward pass of the same network.

    python perf/bench_metrics.py --archs 30 --batch 64 --threads 2 --device cpu
    python perf/bench_metrics.py --space nb101 --archs 10 --batch 64 --no-memory

For each of `--archs` random architectures of `--space` (NB201: `--layout`, by default the reference layout,
the layout of the reference values; NB101: the benchmark's network, `--stem` channels) it
times, interleaved and `--repeat` times each (keeping the fastest, which is the least disturbed by other
processes on a shared machine):
  - one forward+backward pass of the mean cross-entropy (`loss.backward()`, training mode): the unit;
  - the same pass with every nn.AvgPool2d computed as the engine does on the CPU (`avg_pool_as_conv`): the
    unit a network would have with that kernel, to tell the engine's own cost from the faster kernel;
  - the nine metrics of the reference table in one `compute_metrics` call;
  - the HNAS set (grad_norm, snip, grasp, ntk_trace, condnum) in one call;
and prints the median over architectures of each ratio to both units. With `--each` it also times every
metric alone; with `--newer`, each of the newer proxies alone (AZ-NAS's three together: they share a pass).
Then it measures the extra peak memory of `ntk_trace` on the all-nor_conv_3x3 cell, each measurement in a
fresh subprocess: on CPU the RSS high-water mark (VmHWM of /proc/self/status, reset right before the call
through /proc/self/clear_refs; `resource.getrusage` where that is not possible) minus the RSS before the
call, for ntk_trace and for one forward+backward pass; on CUDA `torch.cuda.max_memory_allocated` minus the memory
allocated before the call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NINE = ["grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov", "plain", "ntk_trace", "condnum"]
HNAS = ["grad_norm", "snip", "grasp", "ntk_trace", "condnum"]
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
NEWER = ["meco", "trainable_layers", "zico", "epe_nas", "swap", "zen", "vkdnw", "te_nas_lr"]
AZ = ["az_expressivity", "az_progressivity", "az_trainability"]
REFERENCE_RATIO = {"nine": 16.5}


def probe_batch(batch, device):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    return x.to(device), y.to(device)


SPACE_OPTIONS = {"nb201": lambda args: {"layout": args.layout}, "nb101": lambda args: {"stem_channels": args.stem}}


def create(args):
    from hnas.spaces import create_space

    return create_space(args.space, **SPACE_OPTIONS[args.space](args))


def build(arch, device, seed=0, space=None):
    import torch

    from hnas.spaces import create_space

    torch.manual_seed(seed)
    space = space or create_space("nb201", layout="reference")
    return space.build(arch, num_classes=10).to(device)


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward(net, x, y):
    import torch.nn.functional as F

    net.train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()


def forward_backward_engine_pooling(net, x, y):
    """The unit with each nn.AvgPool2d computed as the engine computes it (its `forward` replaced for the
    duration rather than a function mode, which would add its own dispatch cost to the unit)."""
    from torch import nn

    from hnas.metrics.kernels import avg_pool_as_conv, plain_conv

    def pooled(m):
        def forward(inp):
            bound = dict(input=inp, kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                         ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad,
                         divisor_override=m.divisor_override)
            out = avg_pool_as_conv(bound, plain_conv)
            return type(m).forward(m, inp) if out is None else out

        return forward

    pools = [m for m in net.modules() if isinstance(m, nn.AvgPool2d)]
    try:
        for m in pools:
            m.forward = pooled(m)
        forward_backward(net, x, y)
    finally:
        for m in pools:
            m.__dict__.pop("forward", None)


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def speed(args, device):
    import torch

    from hnas.metrics import compute_metrics

    space = create(args)
    archs = space.sample_distinct(args.archs, seed=args.seed)
    x, y = probe_batch(args.batch, device)
    sets = {"nine": NINE, "hnas": HNAS}
    if args.each:
        sets.update({name: [name] for name in NINE})
    if args.newer:
        sets.update({name: [name] for name in NEWER})
        sets["az"] = AZ
    # warm-up (kernel selection, allocator)
    net = build(archs[0], device, space=space)
    forward_backward(net, x, y)
    compute_metrics(net, x, y, NINE)
    units = {"fb": forward_backward, "fb_pool": forward_backward_engine_pooling}
    ratios = {(k, u): [] for k in sets for u in units}
    seconds = {k: [] for k in list(units) + list(sets)}
    for i, arch in enumerate(archs):
        net = build(arch, device, seed=i, space=space)
        best = {k: float("inf") for k in seconds}
        for _ in range(args.repeat):
            for unit, fn in units.items():
                best[unit] = min(best[unit], timed(lambda: fn(net, x, y), device))
            for key, names in sets.items():
                best[key] = min(best[key], timed(lambda: compute_metrics(net, x, y, names), device))
        for key in best:
            seconds[key].append(best[key])
        for key, unit in ratios:
            ratios[key, unit].append(best[key] / best[unit])
        line = " ".join(f"{k} {best[k] / best['fb']:.2f}x/{best[k] / best['fb_pool']:.2f}x" for k in sets)
        print(f"[{i + 1:2d}/{len(archs)}] fb {best['fb'] * 1e3:6.1f} ms, with the engine's pooling "
              f"{best['fb_pool'] * 1e3:6.1f} ms  {line}  {arch}", flush=True)
        del net
    return ratios, seconds


MEMORY_CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from perf.bench_metrics import build, probe_batch, forward_backward
from hnas.metrics import compute_metrics
device = torch.device({device!r})
net = build({arch!r}, device)
x, y = probe_batch({batch}, device)
def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
def reset_high_water():  # VmHWM := current RSS (a forked child inherits its parent's ru_maxrss)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
if {what!r} == "fb":
    run = lambda: forward_backward(net, x, y)
else:
    run = lambda: compute_metrics(net, x, y, [{what!r}])
if device.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**20
    run(); torch.cuda.synchronize()
    print(json.dumps({{"extra_mb": torch.cuda.max_memory_allocated() / 2**20 - before}}))
else:
    reset = reset_high_water()
    before = status_mb("VmRSS")
    run()
    peak = status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({{"extra_mb": peak - before}}))
"""


def memory(args, device, what):
    root = str(Path(__file__).resolve().parents[1])
    code = MEMORY_CHILD.format(root=root, threads=args.threads, device=str(device), arch=ALL_CONV,
                               batch=args.batch, what=what)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="nb201", choices=sorted(SPACE_OPTIONS))
    parser.add_argument("--layout", default="reference", choices=["reference", "compact"],
                        help="NB201: the network layout (compact: NATS-Bench's, where AZ-NAS, SWAP and VKDNW score)")
    parser.add_argument("--stem", type=int, default=128, help="NB101: stem channels (128 in the benchmark)")
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=3, help="timings per architecture (fastest kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the architecture sample")
    parser.add_argument("--each", action="store_true", help="also time each of the nine metrics alone")
    parser.add_argument("--newer", action="store_true", help="also time each of the newer proxies alone")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--glibc-malloc", action="store_true",
                        help="glibc's default malloc settings (run.py keeps freed memory: hnas/allocator.py)")
    args = parser.parse_args(argv)

    import torch

    from hnas.allocator import keep_freed_memory

    kept = False if args.glibc_malloc else keep_freed_memory()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {args.threads}, batch {args.batch}, "
          f"{args.archs} random {args.space} architectures ({SPACE_OPTIONS[args.space](args)}), fastest of "
          f"{args.repeat}; freed memory {'kept (hnas.allocator)' if kept else 'returned (glibc defaults)'}")
    ratios, seconds = speed(args, device)
    print()
    print(f"median forward+backward: {statistics.median(seconds['fb']) * 1e3:.1f} ms "
          f"({statistics.median(seconds['fb_pool']) * 1e3:.1f} ms with the engine's pooling kernel)")
    unit_labels = {"fb": "to forward+backward", "fb_pool": "to forward+backward with the engine's pooling"}
    for (key, unit), values in ratios.items():
        label = {"nine": "nine reference metrics together", "hnas": "HNAS set (grad_norm, snip, grasp, ntk_trace, "
                 "condnum)"}.get(key, f"{key} alone")
        ref = f"   (reference: {REFERENCE_RATIO[key]}x)" if key in REFERENCE_RATIO and unit == "fb" else ""
        print(f"{label:54s} {unit_labels[unit]:46s} median {statistics.median(values):5.2f}x  "
              f"[min {min(values):.2f}, max {max(values):.2f}]  "
              f"median {statistics.median(seconds[key]) * 1e3:.0f} ms{ref}")
    if not args.no_memory and args.space == "nb201":
        fb = memory(args, device, "fb")
        ntk = memory(args, device, "ntk_trace")
        print()
        print(f"all-nor_conv_3x3 cell, batch {args.batch}: peak memory above the memory before the call")
        print(f"  one forward+backward pass: {fb:7.1f} MB")
        print(f"  ntk_trace:                 {ntk:7.1f} MB   (extra over forward+backward: {ntk - fb:+.1f} MB)")


if __name__ == "__main__":
    main()
