"""The images of a training run: the protocol's augmentation, the loaders, and each process's share.

Augmentation (darts.md 5.1-5.3):
- 32x32 datasets (cifar10, cifar100, fake; imagenet16_120 at 16x16 with padding 2, as NAS-Bench-201 trained
  it): RandomCrop(side, padding 4) -> RandomHorizontalFlip -> ToTensor -> Normalize -> Cutout (train.cutout);
  test: ToTensor -> Normalize.
- imagenet: RandomResizedCrop(224) -> RandomHorizontalFlip -> ColorJitter(0.4, 0.4, 0.4, 0.2) -> ToTensor ->
  Normalize; test: Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize.

Every random choice is drawn from torch's generator, which a DataLoader seeds in each worker process from
the training process's generator, and which checkpoints save: so a resumed run sees the same images.
"""

import multiprocessing
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torchvision import transforms

from hnas import data
from hnas.errors import HnasError

# DARTS's CIFAR constants (its utils.py), which its training used; hnas.data keeps NAS-Bench-201's rounded
# ones for probe batches. The other datasets use hnas.data's (ImageNet's are the same as DARTS's).
NORMALISATION = {
    "cifar10": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    "cifar100": ((0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
                 (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)),
}
IMAGENET_CROP, IMAGENET_RESIZE = 224, 256
SMALL = {"cifar10": (32, 4), "cifar100": (32, 4), "fake": (32, 4), "imagenet16_120": (16, 2)}  # side, padding


class Cutout:
    """Zero a `length` x `length` square of a normalised image tensor, centred on a uniformly drawn pixel and
    clipped at the borders (so it covers less near an edge), as DARTS's Cutout does."""

    def __init__(self, length):
        self.length = length

    def __call__(self, image):
        height, width = image.shape[-2:]
        y, x = int(torch.randint(height, ())), int(torch.randint(width, ()))
        half = self.length // 2
        image = image.clone()
        image[..., max(0, y - half):min(height, y + half), max(0, x - half):min(width, x + half)] = 0
        return image


def input_size(dataset):
    """The side of the images the network gets (the space builds its network for it)."""
    return IMAGENET_CROP if dataset == "imagenet" else SMALL[dataset][0]


def _normalize(dataset):
    return transforms.Normalize(*NORMALISATION.get(dataset, data.NORMALISATION[dataset]))


def train_transform(dataset, cutout=None):
    if dataset == "imagenet":
        steps = [transforms.RandomResizedCrop(IMAGENET_CROP), transforms.RandomHorizontalFlip(),
                 transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)]
    else:
        side, padding = SMALL[dataset]
        steps = [transforms.RandomCrop(side, padding=padding), transforms.RandomHorizontalFlip()]
    steps += [transforms.ToTensor(), _normalize(dataset)]
    if cutout is not None:
        steps.append(Cutout(cutout))
    return transforms.Compose(steps)


def eval_transform(dataset):
    resize = [transforms.Resize(IMAGENET_RESIZE), transforms.CenterCrop(IMAGENET_CROP)] if dataset == "imagenet" else []
    return transforms.Compose([*resize, transforms.ToTensor(), _normalize(dataset)])


@dataclass
class Loaders:
    train: DataLoader
    test: DataLoader
    sampler: DistributedSampler  # set_epoch(e) before each epoch: the epoch's shuffle
    train_images: int  # in the whole training set (all processes)
    test_images: int


def per_process_batch(batch_size, world_size):
    if batch_size % world_size:
        raise HnasError(f"train.batch_size={batch_size} is the batch of all {world_size} processes together and "
                        f"must divide evenly among them: use a multiple of {world_size}")
    return batch_size // world_size


def make_loaders(cfg, dataset, seed, world):
    """The loaders of process `world.rank` of `world.size`: a seeded shuffle of its share of the training
    set each epoch (DistributedSampler: the same code for one process), and its share of the evaluation set
    (the test set, or with `cfg.holdout` the held-out part of the training set: `evaluation_split`)."""
    train_images = train_transform(dataset, cfg.cutout) if cfg.augment else eval_transform(dataset)
    train = data.load_dataset(dataset, "train", transform=train_images)
    if cfg.holdout is None:
        test = data.load_dataset(dataset, "test", transform=eval_transform(dataset))
        if cfg.subset is not None:
            train, test = (Subset(d, range(min(cfg.subset, len(d)))) for d in (train, test))
    else:
        train, test = evaluation_split(train, data.load_dataset(dataset, "train", transform=eval_transform(dataset)),
                                       cfg, seed)
    batch = per_process_batch(cfg.batch_size, world.size)
    sampler = DistributedSampler(train, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed)
    # The evaluation images are split without padding (DistributedSampler would repeat some), so the summed
    # counts are exactly the evaluation set's.
    shard = Subset(test, range(world.rank, len(test), world.size))
    options = {"batch_size": batch, "num_workers": cfg.workers, "pin_memory": world.device.type == "cuda",
               "multiprocessing_context": _worker_context(cfg.workers)}
    return Loaders(DataLoader(train, sampler=sampler, **options), DataLoader(shard, shuffle=False, **options),
                   sampler, len(train), len(test))


def evaluation_split(train, held_out, cfg, seed):
    """(training part, evaluation part) of the training set (`train` and `held_out`: the same images with
    the training and the evaluation transform): of its first `cfg.subset` images (all if null), in file
    order or, with `cfg.holdout_shuffle`, in the order of a permutation seeded by `seed`, the first
    holdout x N train and the next holdout x N evaluate (HNAS: 25,000 and 25,000 of CIFAR's 50,000)."""
    total = len(train) if cfg.subset is None else min(cfg.subset, len(train))
    order = list(range(total))
    if cfg.holdout_shuffle:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    split = int(cfg.holdout * total)
    if split < 2:
        raise HnasError(f"train.holdout={cfg.holdout} of {total} images leaves {split} to train on: raise "
                        "train.holdout or train.subset")
    return Subset(train, order[:split]), Subset(held_out, order[split:2 * split])


def _worker_context(workers):
    """An explicit `fork` context: without one, a DataLoader starts workers with the process's default start
    method, which is joblib's `loky` under Hydra's joblib launcher; and `spawn` or `forkserver` children
    there fail to re-create that start method ("cannot find context for 'loky'"). Forked workers touch no
    CUDA and no thread of the training process, and need no copy of the dataset."""
    return multiprocessing.get_context("fork") if workers > 0 else None
