"""Datasets and the probe batch: the real CIFAR-10 images, and generated files in the official formats."""

import logging
import pickle

import numpy as np
import pytest
import torch

from conftest import needs_data
from hnas import data
from hnas.errors import HnasError

CIFAR10_ORDER = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def unnormalise(image, name):
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in data.NORMALISATION[name])
    return image * std + mean


# ----------------------------------------------------------------------------------------------------------
# Real CIFAR-10 images (the test split as class folders of JPEGs)


@needs_data
def test_real_cifar10_folder_loads_in_standard_class_order():
    dataset = data.load_dataset("cifar10", "test")
    assert len(dataset) == 10_000
    assert dataset.classes == CIFAR10_ORDER
    assert np.bincount(data.labels_of(dataset)).tolist() == [1000] * 10
    # Each label is the folder its image sits in.
    for i in (0, 4321, 9999):
        path, label = dataset.samples[i]
        assert path.split("/")[-2] == CIFAR10_ORDER[label]
    image, label = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and isinstance(label, int)


@needs_data
def test_real_cifar10_pixels_match_the_decoded_subset(data_dir):
    """Normalisation and CHW layout: undoing them gives the npz's decoded pixels (HWC uint8)."""
    subset = np.load(data_dir / "cifar10-test-jpg" / "cifar10_test_subset2000_decoded.npz")
    dataset = data.load_dataset("cifar10", "test")
    for k in (0, 1234):
        index = [p for p, _ in dataset.samples].index(str(data_dir / "cifar10-test-jpg" / subset["files"][k]))
        image, label = dataset[index]
        assert label == subset["labels"][k]
        pixels = unnormalise(image, "cifar10").permute(1, 2, 0).numpy() * 255
        np.testing.assert_allclose(pixels, subset["images"][k], atol=1e-3)


@needs_data
def test_real_cifar10_normalised_statistics():
    images, _ = data.probe_batch("cifar10", 500, seed=0, split="test")
    mean, std = images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))
    assert mean.abs().max() < 0.1
    assert ((std > 0.85) & (std < 1.15)).all()


# ----------------------------------------------------------------------------------------------------------
# Probe batch


@needs_data
def test_probe_batch_is_deterministic_per_seed():
    a_images, a_labels = data.probe_batch("cifar10", 64, seed=0, split="test")
    b_images, b_labels = data.probe_batch("cifar10", 64, seed=0, split="test")
    c_images, _ = data.probe_batch("cifar10", 64, seed=1, split="test")
    assert a_images.shape == (64, 3, 32, 32) and a_labels.dtype == torch.long
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    assert not torch.equal(a_images, c_images)
    # No image twice (drawn without replacement).
    assert len({tuple(x.flatten()[:50].tolist()) for x in a_images}) == 64


@needs_data
def test_probe_batch_per_class():
    images, labels = data.probe_batch("cifar10", None, seed=3, per_class=4, split="test")
    assert images.shape == (40, 3, 32, 32)
    assert np.bincount(labels.numpy()).tolist() == [4] * 10
    again, _ = data.probe_batch("cifar10", 40, seed=3, per_class=4, split="test")
    assert torch.equal(images, again)
    with pytest.raises(HnasError, match="per class"):
        data.probe_batch("cifar10", 64, seed=3, per_class=4, split="test")


@needs_data
def test_probe_batch_falls_back_to_an_existing_split(caplog, monkeypatch):
    monkeypatch.setattr(data, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="hnas.data"):
        images, _ = data.probe_batch("cifar10", 8, seed=0, split="train")
    assert "no train split" in caplog.text
    assert torch.equal(images, data.probe_batch("cifar10", 8, seed=0, split="test")[0])


def test_probe_batch_size_checked():
    with pytest.raises(HnasError, match="batch size"):
        data.probe_batch("fake", 5000, seed=0)


# ----------------------------------------------------------------------------------------------------------
# Generated files in the official formats


def _pickle(path, entry):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def test_generated_cifar100_loads(tmp_path):
    """The official python-pickle layout; torchvision would refuse these files (md5), our reader does not."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar100" / "cifar-100-python"
    train = rng.integers(0, 256, size=(30, 3072), dtype=np.uint8)
    train_labels = rng.integers(0, 100, size=30).tolist()
    # Keys as bytes (a Python 3 pickle of the official dicts) in one file, as str in the other: both occur.
    _pickle(folder / "train", {b"data": train, b"fine_labels": train_labels, b"coarse_labels": [0] * 30})
    _pickle(folder / "test", {"data": train[:10], "fine_labels": train_labels[:10], "coarse_labels": [0] * 10})
    _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})

    dataset = data.load_dataset("cifar100", "train", data_dir=tmp_path)
    assert len(dataset) == 30
    image, label = dataset[7]
    assert image.shape == (3, 32, 32) and label == train_labels[7]
    # Rows are R, G, B planes of 32x32: pixel (row 2, col 5) of the green plane is entry 1024 + 2*32 + 5.
    green = unnormalise(image, "cifar100")[1, 2, 5] * 255
    assert green.item() == pytest.approx(train[7, 1024 + 2 * 32 + 5], abs=1e-3)
    assert len(data.load_dataset("cifar100", "test", data_dir=tmp_path)) == 10
    assert data.available_splits("cifar100", tmp_path) == ["train", "test"]
    images, labels = data.probe_batch("cifar100", 8, seed=0, data_dir=tmp_path)
    assert images.shape == (8, 3, 32, 32) and set(labels.tolist()) <= set(train_labels)


def test_generated_cifar10_files_take_precedence_and_must_be_complete(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [i] * 4})
    (tmp_path / "cifar10-jpg" / "train").mkdir(parents=True)  # present but unused: official files come first
    dataset = data.load_dataset("cifar10", "train", data_dir=tmp_path)
    assert len(dataset) == 20 and data.labels_of(dataset).tolist() == [i for i in range(1, 6) for _ in range(4)]
    (folder / "data_batch_3").unlink()
    with pytest.raises(HnasError, match="incomplete: missing .*data_batch_3"):
        data.load_dataset("cifar10", "train", data_dir=tmp_path)


def test_generated_imagenet16_loads_120_classes(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "imagenet16"
    for i in range(1, 11):
        labels = [1, 120, 121, 1000, 60]  # 1-based over 1,000 classes; only 1..120 are kept
        _pickle(folder / f"train_data_batch_{i}", {"data": rng.integers(0, 256, (5, 768), dtype=np.uint8), "labels": labels})
    val = rng.integers(0, 256, (3, 768), dtype=np.uint8)
    _pickle(folder / "val_data", {"data": val, "labels": [5, 500, 120]})

    train = data.load_dataset("imagenet16_120", "train", data_dir=tmp_path)
    assert len(train) == 30 and sorted(set(data.labels_of(train))) == [0, 59, 119]
    test = data.load_dataset("ImageNet16-120", "test", data_dir=tmp_path)
    assert data.labels_of(test).tolist() == [4, 119]
    image, label = test[1]  # the third val image (label 120 -> 119)
    assert image.shape == (3, 16, 16) and label == 119
    red = unnormalise(image, "imagenet16_120")[0, 3, 4] * 255
    assert red.item() == pytest.approx(val[2, 3 * 16 + 4], abs=1e-3)


def test_malformed_pickle_named(tmp_path):
    folder = tmp_path / "imagenet16"
    folder.mkdir()
    (folder / "val_data").write_bytes(b"not a pickle")
    with pytest.raises(HnasError, match="val_data"):
        data.load_dataset("imagenet16_120", "test", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Fake data and errors


def test_fake_dataset():
    dataset = data.load_dataset("fake")
    image, label = dataset[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert -1.0 <= image.min() and image.max() <= 1.0  # [0, 1] normalised with 0.5 / 0.5
    assert not torch.equal(image, data.load_dataset("fake", "test")[0][0])
    images, labels = data.probe_batch("fake", None, seed=0, per_class=2)
    assert np.bincount(labels.numpy(), minlength=10).tolist() == [2] * 10


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet16_120"])
def test_missing_data_names_the_paths(tmp_path, name):
    with pytest.raises(HnasError) as err:
        data.load_dataset(name, "train", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "How to get it" in message
    with pytest.raises(HnasError):  # nothing to fall back to either
        data.probe_batch(name, 8, seed=0, data_dir=tmp_path)


def test_unknown_names():
    with pytest.raises(HnasError, match="unknown dataset"):
        data.load_dataset("svhn")
    with pytest.raises(HnasError, match="unknown split"):
        data.load_dataset("cifar10", "valid")


def test_wrong_class_folders(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "cifar10-jpg" / "test" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "cifar10-jpg" / "test" / cls / "0.jpg")
    with pytest.raises(HnasError, match="expected the CIFAR-10 classes"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path)
