"""Datasets (CIFAR-10, CIFAR-100, ImageNet16-120, ImageNet, fake) and the probe batch the metrics score networks on.

Every dataset yields (normalised float tensor C x H x W, int label), normalised with NAS-Bench-201's per-dataset
mean and std (ImageNet: resized to 256, centre-cropped to 224, the usual ImageNet mean and std), unless the
caller passes its own `transform` of the PIL image (training augmentation, hnas.train.data). Where each
dataset is looked for, under the data folder (`hnas.paths.data_dir()` by default):

- cifar10 / cifar100: the official python-pickle files as torchvision downloads them
  (`cifar10/cifar-10-batches-py/`, `cifar100/cifar-100-python/`), else class folders of images
  (`cifar10-test-jpg/<split>/<class>/*.jpg` or `cifar10-jpg/<split>/...`, likewise for cifar100).
- imagenet16_120: the standard ImageNet16 pickles `imagenet16/train_data_batch_1..10` and `imagenet16/val_data`.
- imagenet: class folders `imagenet/train/<wnid>/*.JPEG` (train) and `imagenet/val/<wnid>/*.JPEG` (test).
- fake: torchvision FakeData, generated, nothing to download.

See docs/data.md.
"""

import hashlib
import logging
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hnas import paths
from hnas.errors import HnasError

log = logging.getLogger(__name__)
# torchvision is imported in the functions that use it: its import takes seconds (it loads torch._dynamo), and
# every run imports this module, searches and reports included, which never read an image.

NAMES = ("cifar10", "cifar100", "imagenet16_120", "imagenet", "fake")
SPLITS = ("train", "test")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16_120": 120, "imagenet": 1000, "fake": 10}

# NAS-Bench-201's normalisation (its get_datasets), in 0..255 pixel units divided by 255.
NORMALISATION = {
    "cifar10": ([x / 255 for x in (125.3, 123.0, 113.9)], [x / 255 for x in (63.0, 62.1, 66.7)]),
    "cifar100": ([x / 255 for x in (129.3, 124.1, 112.4)], [x / 255 for x in (68.2, 65.4, 70.4)]),
    "imagenet16_120": ([x / 255 for x in (122.68, 116.66, 104.01)], [x / 255 for x in (63.22, 61.26, 65.09)]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "fake": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}

# Standard CIFAR-10 label order; it is also the alphabetical order in which ImageFolder numbers class folders.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Official python-pickle files (torchvision's layout under <data_dir>/<name>): folder, files per split, label key.
CIFAR_FILES = {
    "cifar10": (
        "cifar-10-batches-py",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "labels",
    ),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels"),
}
IMAGENET16_FILES = {"train": [f"train_data_batch_{i}" for i in range(1, 11)], "test": ["val_data"]}
IMAGENET16_CLASSES = 120  # ImageNet16-120 keeps the first 120 of the 1,000 ImageNet classes
IMAGENET_FOLDERS = {"train": "train", "test": "val"}  # the ILSVRC-2012 validation images are its test split

FAKE_SIZE = 1000
FAKE_OFFSETS = {"train": 0, "test": 1_000_000}  # different seeds, so the two fake splits hold different images

HOW_TO_GET = {
    "cifar10": "download CIFAR-10 with torchvision.datasets.CIFAR10(root='<data folder>/cifar10', download=True) "
    "on a machine with internet access, or put images in class folders <data folder>/cifar10-jpg/<split>/<class>/",
    "cifar100": "download CIFAR-100 with torchvision.datasets.CIFAR100(root='<data folder>/cifar100', download=True) "
    "on a machine with internet access, or put images in class folders <data folder>/cifar100-jpg/<split>/<class>/",
    "imagenet16_120": "download ImageNet16 (the 16x16 downsampled ImageNet of Chrabaszcz et al. 2017, "
    "https://image-net.org/download-images, 'Imagenet16_train.zip' and 'Imagenet16_val.zip') and unpack "
    "train_data_batch_1..10 and val_data into <data folder>/imagenet16/",
    "imagenet": "download ILSVRC-2012 (https://image-net.org/download-images) and unpack it into class folders "
    "<data folder>/imagenet/train/<wnid>/*.JPEG and <data folder>/imagenet/val/<wnid>/*.JPEG (the validation "
    "images sorted into class folders, e.g. with the usual valprep.sh)",
}


class ArrayDataset(Dataset):
    """uint8 images (N, 3, H, W) with int labels -> (normalised float tensor, int), as ToTensor + Normalize;
    with a `transform`, (transform(PIL image), int) instead."""

    def __init__(self, images, labels, mean, std, transform=None):
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        self.targets = [int(label) for label in labels]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        if self.transform is not None:
            return self.transform(Image.fromarray(self.images[i].permute(1, 2, 0).numpy())), self.targets[i]
        image = self.images[i].float().div(255.0)
        return (image - self.mean) / self.std, self.targets[i]


def _name(name):
    key = str(name).lower().replace("-", "_")
    if key not in NAMES:
        raise HnasError(f"unknown dataset {name!r}; choose one of: {', '.join(NAMES)}")
    return key


def _split(split):
    if split not in SPLITS:
        raise HnasError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    return split


def _root(data_dir):
    return Path(data_dir).expanduser().resolve() if data_dir is not None else paths.data_dir()


def num_classes(name):
    return NUM_CLASSES[_name(name)]


def load_dataset(name, split="train", data_dir=None, transform=None):
    """The `split` ("train" or "test") of dataset `name`; HnasError naming what was looked for if absent.
    `transform` (of a PIL image) replaces the default ToTensor + Normalize."""
    name, split, root = _name(name), _split(split), _root(data_dir)
    if name == "fake":
        return _fake(split, transform)
    source = _find(name, split, root)
    if source is None:
        raise HnasError(
            f"{name} {split} split not found. Looked for:\n  "
            + "\n  ".join(_describe(c) for c in _candidates(name, split, root))
            + f"\nHow to get it: {HOW_TO_GET[name]}\n"
            f"(The data folder is {root}; set ${paths.DATA_ENV} or paths.data_dir to change it.)"
        )
    kind, location = source
    if kind == "imagefolder":
        return _image_folder(name, location, transform)
    if name == "imagenet16_120":
        return _imagenet16(location, transform)
    return _cifar_pickles(name, location, transform)


def available_splits(name, data_dir=None):
    """The splits of `name` that exist under the data folder."""
    name, root = _name(name), _root(data_dir)
    if name == "fake":
        return list(SPLITS)
    return [split for split in SPLITS if _find(name, split, root) is not None]


def _candidates(name, split, root):
    """Where a split may live, in order of preference: official files first, then image folders."""
    if name == "imagenet16_120":
        return [[root / "imagenet16" / f for f in IMAGENET16_FILES[split]]]
    if name == "imagenet":
        return [root / "imagenet" / IMAGENET_FOLDERS[split]]
    folder, files, _ = CIFAR_FILES[name]
    return [
        [root / name / folder / f for f in files[split]],
        root / f"{name}-test-jpg" / split,
        root / f"{name}-jpg" / split,
    ]


def _describe(candidate):
    if isinstance(candidate, list):
        return f"official files {candidate[0].parent}/{{{', '.join(f.name for f in candidate)}}}"
    return f"image folder {candidate}/<class>/*"


def _find(name, split, root):
    """('pickles', [files]) or ('imagefolder', folder) for the first candidate that exists, else None."""
    for candidate in _candidates(name, split, root):
        if isinstance(candidate, list):
            present = [f.exists() for f in candidate]
            if all(present):
                return "pickles", candidate
            if any(present):  # half a download is a mistake to report, not a reason to use other data
                missing = [str(f) for f, ok in zip(candidate, present) if not ok]
                raise HnasError(f"{name} {split} split is incomplete: missing {', '.join(missing)}. {HOW_TO_GET[name]}")
        elif candidate.is_dir():
            return "imagefolder", candidate
    return None


def _transform(name):
    from torchvision import transforms

    mean, std = NORMALISATION[name]
    # ImageNet images differ in size: DARTS's evaluation resize and crop makes them one size (probe batches)
    resize = [transforms.Resize(256), transforms.CenterCrop(224)] if name == "imagenet" else []
    return transforms.Compose([*resize, transforms.ToTensor(), transforms.Normalize(mean, std)])


def _image_folder(name, folder, transform=None):
    from torchvision import datasets

    dataset = datasets.ImageFolder(str(folder), transform=transform or _transform(name))
    # ImageFolder numbers the class folders in sorted order; both CIFAR label orders are alphabetical, so the
    # labels are the standard ones exactly when the folders are the standard classes.
    if name == "cifar10" and tuple(dataset.classes) != CIFAR10_CLASSES:
        raise HnasError(f"class folders in {folder} are {dataset.classes}; expected the CIFAR-10 classes "
                        f"{list(CIFAR10_CLASSES)}")
    if len(dataset.classes) != NUM_CLASSES[name]:
        raise HnasError(f"{folder} has {len(dataset.classes)} class folders; {name} has {NUM_CLASSES[name]}")
    return dataset


def _unpickle(path):
    # The official files are Python pickles (Python 2 ones need latin1); they are data files users download
    # from the dataset authors. Keys are str in the official files and may be bytes in files written by Python 3.
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise HnasError(f"{path} is not a readable dataset pickle ({err})") from err
    if not isinstance(entry, dict):
        raise HnasError(f"{path} should hold a dict with 'data' and labels, found {type(entry).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _field(entry, key, path):
    if key not in entry:
        raise HnasError(f"{path} has no {key!r} entry (keys: {sorted(entry)})")
    return entry[key]


def _read_batches(files, label_key, side):
    images, labels = [], []
    for path in files:
        entry = _unpickle(path)
        data = np.asarray(_field(entry, "data", path), dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * side * side:
            raise HnasError(f"{path}: 'data' has shape {data.shape}, expected (N, {3 * side * side})")
        images.append(data.reshape(-1, 3, side, side))  # rows are R, G, B planes: CHW order
        labels.append(np.asarray(_field(entry, label_key, path), dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _cifar_pickles(name, files, transform=None):
    images, labels = _read_batches(files, CIFAR_FILES[name][2], side=32)
    return ArrayDataset(images, labels, *NORMALISATION[name], transform=transform)


def _imagenet16(files, transform=None):
    images, labels = _read_batches(files, "labels", side=16)
    # Labels are 1-based over 1,000 classes; ImageNet16-120 keeps classes 1..120 and numbers them 0..119.
    keep = (labels >= 1) & (labels <= IMAGENET16_CLASSES)
    return ArrayDataset(images[keep], labels[keep] - 1, *NORMALISATION["imagenet16_120"], transform=transform)


def _fake(split, transform=None):
    from torchvision import datasets

    return datasets.FakeData(
        size=FAKE_SIZE,
        image_size=(3, 32, 32),
        num_classes=NUM_CLASSES["fake"],
        transform=transform or _transform("fake"),
        random_offset=FAKE_OFFSETS[split],
    )


def labels_of(dataset):
    """All labels of a dataset, without decoding images where the dataset knows them."""
    targets = getattr(dataset, "targets", None)
    if targets is None:  # FakeData draws each label with its image
        targets = [dataset[i][1] for i in range(len(dataset))]
    return np.asarray(targets, dtype=np.int64)


_WARNED = set()


def resolve_split(dataset_name, split="train", data_dir=None):
    """The split a probe batch of `split` is read from: `split` itself, or, where only another split exists
    (here: only CIFAR-10 test images are on disk), that split, with a warning once per process. A probe batch
    needs labelled images, not a particular split; metric tables are named by the split actually read."""
    name, split = _name(dataset_name), _split(split)
    available = available_splits(name, data_dir)
    if split in available or not available:
        return split
    if (name, split) not in _WARNED:
        _WARNED.add((name, split))
        log.warning("%s has no %s split in the data folder; taking probe batches from its %s split",
                    name, split, available[0])
    return available[0]


def source_of(dataset_name, split, data_dir=None):
    """Where the images of a split are read from, relative to the data folder (for a table's record)."""
    name, split, root = _name(dataset_name), _split(split), _root(data_dir)
    if name == "fake":
        return f"torchvision FakeData ({FAKE_SIZE} images, offset {FAKE_OFFSETS[split]})"
    found = _find(name, split, root)
    if found is None:
        return "missing"
    kind, location = found
    if kind == "imagefolder":
        return f"image folder {location.relative_to(root)}"
    return f"official files {location[0].parent.relative_to(root)}"


def fingerprint(images, labels):
    """SHA-256 of a batch exactly as the networks see it: float32 images, then int64 labels."""
    digest = hashlib.sha256()
    digest.update(images.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    digest.update(labels.detach().to(torch.int64).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def probe_batch(dataset_name, batch_size, seed, per_class=None, split="train", data_dir=None):
    """B labelled images chosen with `seed`: (images float B x C x H x W, labels int64 B).

    Uniformly at random without replacement, or `per_class` images of every class (grouped by class; then
    `batch_size` may be None, else it must equal per_class x number of classes). The same seed gives the same
    batch. The images come from `resolve_split(dataset_name, split)`.
    """
    name = _name(dataset_name)
    dataset = load_dataset(name, resolve_split(name, split, data_dir), data_dir)
    labels = labels_of(dataset)
    rng = np.random.default_rng(seed)
    if per_class is None:
        chosen = _uniform(rng, len(dataset), batch_size)
    else:
        chosen = _per_class(rng, labels, per_class, batch_size, name)
    images = torch.stack([dataset[int(i)][0] for i in chosen])
    return images, torch.as_tensor(labels[chosen], dtype=torch.long)


def _uniform(rng, size, batch_size):
    if batch_size is None or not 0 < int(batch_size) <= size:
        raise HnasError(f"probe batch size must be between 1 and the dataset size {size}, got {batch_size}")
    return rng.choice(size, size=int(batch_size), replace=False)


def _per_class(rng, labels, per_class, batch_size, name):
    classes = np.unique(labels)
    if batch_size is not None and int(batch_size) != per_class * len(classes):
        raise HnasError(
            f"a probe batch of {per_class} images per class of {name}'s {len(classes)} classes has "
            f"{per_class * len(classes)} images, but batch_size is {batch_size}: set batch_size to that or to None"
        )
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise HnasError(f"{name} class {c} has only {len(members)} images, fewer than per_class={per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.concatenate(chosen)
