"""Training speed of one network: images/s of the train step `stage=train` runs (forward, loss with the
auxiliary head, backward, gradient clipping, SGD step; mixed precision and channels-last on CUDA), on random
images held in memory, so data loading is left out.

    python perf/bench_train.py space=darts stage.arch=DARTS_V2 train=darts_cifar10 --steps 20
    python perf/bench_train.py space=darts stage.arch=DARTS_V2 train=darts_cifar10 train.batch_size=32 device=cpu --threads 2
    python perf/bench_train.py space=darts stage.arch=DARTS_V2 train=darts_imagenet dataset=imagenet train.batch_size=128

Arguments other than the --options are `run.py` overrides: the network, protocol and batch are those a
training run of the same overrides would use (one process: train.batch_size is the batch of the step). It
times `--steps` steps after `--warmup` steps and prints images/s and seconds per step.

With `--original <folder of the DARTS code's cnn/>` (github.com/quark0/darts, fetched outside this repository)
it also times that code's NetworkCIFAR of the same genotype, width and depth, trained as its train.py does
(loss with the auxiliary head, backward, gradient clipping, SGD step, top-1/top-5 of the batch, the last
written out here since its utils.accuracy fails on torch 2), in
`--rounds` interleaved rounds keeping the fastest of each, and prints the ratio. Drop path stays at 0 in
both: the DARTS code's drop path only runs on CUDA.
"""

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--original", type=Path, default=None, help="the DARTS code's cnn/ folder")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds with --original")
    args, overrides = parser.parse_known_args()

    import torch
    from hydra import compose, initialize_config_dir

    from hnas.devices import resolve_device
    from hnas.config import register_configs, validate
    from hnas.spaces import create_space, space_options
    from hnas.stages.train import resolve_arch
    from hnas.train.counting import count_parameters
    from hnas.train.data import input_size
    from hnas.train.distributed import World
    from hnas.train.loop import Steps, train_epoch

    if args.threads:
        torch.set_num_threads(args.threads)
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=["stage=train", *overrides]))
    tcfg, device = cfg.train, resolve_device(cfg.device, cfg.jobs_per_gpu)
    space = create_space(cfg.space.name, **space_options(cfg.space))
    arch, side = resolve_arch(cfg.stage, space), input_size(cfg.dataset.name)
    torch.manual_seed(cfg.seed)
    model = space.build_for_training(arch, cfg.dataset.num_classes, init_channels=tcfg.init_channels,
                                     layers=tcfg.layers, auxiliary=tcfg.auxiliary, input_size=side)
    steps = Steps(tcfg, device)
    model.to(device, memory_format=steps.memory_format)
    optimizer = torch.optim.SGD(model.parameters(), tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=steps.amp)
    world = World(0, 0, 1, device)
    batch = [(torch.randn(tcfg.batch_size, 3, side, side), torch.randint(0, cfg.dataset.num_classes, (tcfg.batch_size,)))]
    print(f"{space.name} {arch}: C={tcfg.init_channels} L={tcfg.layers} auxiliary={tcfg.auxiliary}, "
          f"{count_parameters(model) / 1e6:.3f}M parameters, batch {tcfg.batch_size} of {side}x{side} on {device} "
          f"(amp={steps.amp}, channels_last={steps.memory_format == torch.channels_last}, "
          f"threads={torch.get_num_threads()})")
    train_epoch(model, batch * args.warmup, optimizer, scaler, steps, world, desc="warm-up")

    def ours():
        return train_epoch(model, batch * args.steps, optimizer, scaler, steps, world, desc="timed")["images_per_s"]

    if args.original is None:
        start = time.perf_counter()
        rate = ours()
        print(f"{rate:.1f} images/s, {(time.perf_counter() - start) / args.steps * 1000:.1f} ms per step over "
              f"{args.steps} steps")
        return
    theirs = original_step(args.original, space.genotype(arch), tcfg, cfg.dataset.num_classes, device, batch[0])
    for _ in range(args.warmup):
        theirs()
    best_ours = best_theirs = 0.0
    for _ in range(args.rounds):
        best_ours = max(best_ours, ours())
        start = time.perf_counter()
        for _ in range(args.steps):
            theirs()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best_theirs = max(best_theirs, args.steps * tcfg.batch_size / (time.perf_counter() - start))
    print(f"hnas: {best_ours:.1f} images/s; DARTS code: {best_theirs:.1f} images/s; ratio {best_ours / best_theirs:.2f} "
          f"(fastest of {args.rounds} interleaved rounds of {args.steps} steps)")


def original_step(folder, genotype, tcfg, num_classes, device, batch):
    """One training step of the DARTS code's NetworkCIFAR, as its train.py runs it, as a function."""
    import contextlib
    import io

    import torch
    from torch import nn

    sys.path.insert(0, str(folder))
    import model as darts_model  # noqa: E402  (the DARTS code's module, from --original)

    with contextlib.redirect_stdout(io.StringIO()):  # its Cell prints its channels
        net = darts_model.NetworkCIFAR(tcfg.init_channels, num_classes, tcfg.layers, tcfg.auxiliary, genotype)
    net.drop_path_prob = 0.0
    net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    criterion = nn.CrossEntropyLoss()
    images, labels = batch

    def step():
        x, y = images.to(device), labels.to(device)
        optimizer.zero_grad()
        logits, logits_aux = net(x)
        loss = criterion(logits, y)
        if tcfg.auxiliary:
            loss = loss + tcfg.auxiliary_weight * criterion(logits_aux, y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), tcfg.grad_clip)
        optimizer.step()
        # its utils.accuracy, which torch 2 refuses (.view of a transposed tensor): the same top-k sums
        correct = logits.topk(5, 1, True, True).indices.t().eq(y.view(1, -1))
        [correct[:k].reshape(-1).float().sum(0).item() for k in (1, 5)]
        loss.item()

    return step


if __name__ == "__main__":
    main()
