"""Readers of the official NAS-Bench-201 benchmark files, for the converter (hnas/benchmarks/nb201/convert.py).

They turn NATS-Bench topology files (`nats_bench` package) or a NAS-Bench-201 `.pth` file (`nas-bench-201`
package) into rows of the compact table (hnas/benchmarks/nb201/table.py). `params_m` is not read but counted on
the official network (`compact_params`), because the official files' counts are off for 204 architectures.
"""

import logging
import os
import pickle
import re
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from hnas import paths
from hnas.benchmarks.nb201.table import COLUMNS
from hnas.errors import HnasError
from hnas.spaces import nb201 as space

log = logging.getLogger(__name__)

HOW_TO_GET_OFFICIAL = (
    "download the NATS-Bench topology files (NATS-tss-v1_0-3ffb9-simple.tar) or a NAS-Bench-201 .pth file from "
    "https://github.com/D-X-Y/NATS-Bench and give its path"
)


# ----------------------------------------------------------------------------------------------------------
# Parameter count of the official (compact) network


@lru_cache(maxsize=None)
def _params_for_counts(n_conv3, n_conv1):
    # Only the convolutions of a cell hold parameters and all cells of a stage have the same width, so the
    # count depends on how many 3x3 and 1x1 convs the cell has (28 cases), not on where they sit.
    ops = ("nor_conv_3x3",) * n_conv3 + ("nor_conv_1x1",) * n_conv1 + ("none",) * (6 - n_conv3 - n_conv1)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG alone
        net = space.build(space.to_string(ops), num_classes=10, layout="compact")
    return sum(p.numel() for p in net.parameters())


def compact_params(arch):
    """Exact parameter count of the official NB201 CIFAR-10 network (10 classes) of an arch string."""
    ops = space.parse(arch)
    return _params_for_counts(ops.count("nor_conv_3x3"), ops.count("nor_conv_1x1"))


# ----------------------------------------------------------------------------------------------------------
# Official files: NATS-Bench topology (nats_bench) and NAS-Bench-201 .pth (nas-bench-201)


def read_nats(path, indices=None):
    """Compact-table rows from official NATS-Bench topology files, read through the `nats_bench` package.

    `path` is the `NATS-tss-v1_0-3ffb9-simple` folder (read one architecture at a time) or the single
    `.pickle.pbz2` file (loaded whole). `indices` defaults to every architecture the files hold.
    """
    from nats_bench import create

    path = paths.require_file(path, "NATS-Bench topology benchmark", HOW_TO_GET_OFFICIAL)
    fast_mode = path.is_dir()
    try:
        api = create(str(path), "tss", fast_mode=fast_mode, verbose=False)
    except Exception as err:  # the third-party reader raises anything from OSError to KeyError on a bad file
        raise HnasError(f"cannot read {path} as NATS-Bench topology (tss) files: {err!r}. {HOW_TO_GET_OFFICIAL}") from err
    if indices is None:
        indices = _nats_file_indices(path) if fast_mode else sorted(api.evaluated_indexes)
    return _frame_from_api(api, indices, path)


def _nats_file_indices(folder):
    # The per-architecture files are named 000123.pickle.pbz2 (or 123.pickle.pbz2); meta.pickle.pbz2 is not one.
    names = (re.fullmatch(r"(\d+)\.pickle\.pbz2", p.name) for p in Path(folder).iterdir())
    return sorted(int(m.group(1)) for m in names if m)


def read_nb201_pth(path, indices=None, trust_pickle=False):
    """Compact-table rows from an official NAS-Bench-201 `.pth` file, read through the `nas-bench-201` package.

    The file is loaded with torch's safe `weights_only` unpickler; a file holding other Python objects needs
    `trust_pickle=True` (which lets the file run code: only for files you trust). `indices` defaults to the
    architectures the file has evaluated.
    """
    from nas_201_api import NASBench201API

    path = paths.require_file(path, "NAS-Bench-201 .pth file", HOW_TO_GET_OFFICIAL)
    try:
        with _torch_load_unsafe(trust_pickle):
            api = NASBench201API(str(path), verbose=False)
    except pickle.UnpicklingError as err:
        raise HnasError(
            f"{path} holds Python objects that torch's safe loader refuses ({err}). "
            f"If you trust the file, convert it with --trust-pickle (read_nb201_pth(..., trust_pickle=True))."
        ) from err
    except Exception as err:  # the third-party reader asserts, or torch fails, on a file of the wrong kind
        raise HnasError(f"cannot read {path} as a NAS-Bench-201 .pth file: {err!r}. {HOW_TO_GET_OFFICIAL}") from err
    if indices is None:
        indices = sorted(api.evaluated_indexes)
    return _frame_from_api(api, indices, path)


@contextmanager
def _torch_load_unsafe(enabled):
    # NASBench201API calls torch.load(path) itself; since torch 2.6 that means weights_only=True. Passing the
    # path (not a dict we loaded) matters: the API deep-copies a dict, doubling the 28 GB of NB201 v1.0.
    name = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(name)
    if enabled:
        os.environ[name] = "1"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f"Environment variable {name}")  # we set it on purpose
            yield
    finally:
        if enabled:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _frame_from_api(api, indices, source):
    rows = []
    for n, index in enumerate(indices):
        rows.append(_official_row(api, int(index), source))
        if getattr(api, "fast_mode", False):
            # NATS fast mode keeps every architecture it has read: drop it, or 15,625 of them fill the RAM.
            api.arch2infos_dict.pop(int(index), None)
            api.evaluated_indexes.discard(int(index))
        if (n + 1) % 1000 == 0:
            log.info("read %d/%d architectures from %s", n + 1, len(indices), source)
    if not rows:
        raise HnasError(f"{source} holds no architecture results (nothing to convert)")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _more_info(api, index, dataset, hp):
    try:
        return api.get_more_info(index, dataset, hp=hp, is_random=False)  # is_random=False: mean over seeds
    except KeyError:  # this file has no run for that dataset / hp (NB201 v1.0 has 12 epochs only on cifar10-valid)
        return {}


def _num(info, key):
    value = info.get(key)
    return float(value) if value is not None else float("nan")


def _official_row(api, index, source):
    if not 0 <= index < len(api):
        raise HnasError(f"index {index} is out of range for {source}: valid indices are 0..{len(api) - 1}")
    try:
        valid12 = _more_info(api, index, "cifar10-valid", "12")
        valid200 = _more_info(api, index, "cifar10-valid", "200")
        c10_200 = _more_info(api, index, "cifar10", "200")
        c100_12 = _more_info(api, index, "cifar100", "12")
        c100_200 = _more_info(api, index, "cifar100", "200")
        im_12 = _more_info(api, index, "ImageNet16-120", "12")
        im_200 = _more_info(api, index, "ImageNet16-120", "200")
    except (AssertionError, ValueError, OSError) as err:  # how both APIs report an architecture they lack
        raise HnasError(
            f"{source} holds no results for architecture {index} ({err}). "
            f"Convert only the indices it holds (leave out --indices to take them all)."
        ) from err
    arch = space.validate(api.arch(index))
    return {
        "index": index,
        "arch": arch,
        # Computed, not read: the official params are means over seeds, and 204 of them are off (docs).
        "params_m": compact_params(arch) / 1e6,
        "cifar10_valid_acc_12ep": _num(valid12, "valid-accuracy"),
        "cifar10_valid_time_12ep": _num(valid12, "train-all-time"),
        "cifar100_valid_acc_12ep": _num(c100_12, "valid-accuracy"),
        "imagenet16_valid_acc_12ep": _num(im_12, "valid-accuracy"),
        "cifar10_valid_acc_200ep": _num(valid200, "valid-accuracy"),
        "cifar10_valid_time_200ep": _num(valid200, "train-all-time"),
        "cifar10_test_acc_200ep": _num(c10_200, "test-accuracy"),
        "cifar100_test_acc_200ep": _num(c100_200, "test-accuracy"),
        "imagenet16_test_acc_200ep": _num(im_200, "test-accuracy"),
    }
