"""The official NAS-Bench-101 files: check one against its published SHA-256, and read one into the table
(records in any order, aggregated as the official API does: build.py)."""

import hashlib

from tqdm import tqdm

from hnas import paths
from hnas.benchmarks.nb101 import tfrecord
from hnas.benchmarks.nb101.build import TableBuilder
from hnas.benchmarks.nb101.table import HOW_TO_GET
from hnas.errors import HnasError

# SHA-256 of the official files, from the nasbench README.
OFFICIAL_SHA256 = {
    "nasbench_only108.tfrecord": "4c39c3936e36a85269881d659e44e61a245babcb72cb374eacacf75d0e5f4fd1",
    "nasbench_full.tfrecord": "3d64db8180fb1b0207212f9032205064312b6907a3bbc81eabea10db2f5c7e9c",
}


def table_from_tfrecord(path, check_data=True, progress=True):
    """The NB101Table of an official .tfrecord file, aggregated record by record (progress bar on stderr)."""
    path = paths.require_file(path, "NAS-Bench-101 .tfrecord file", HOW_TO_GET)
    builder = TableBuilder(path)
    records = tqdm(tfrecord.read_records(path, check_data), desc=f"reading {path.name}", unit=" records",
                   unit_scale=True, disable=not progress)
    with records:
        for record in records:
            builder.add(record.module_hash, record.epochs, record.adjacency, record.ops,
                        record.trainable_parameters, record.run)
    return builder.build()


def check_sha256(path):
    """The official file name whose README SHA-256 `path` has; raises if it has none of them."""
    path = paths.require_file(path, "NAS-Bench-101 .tfrecord file", HOW_TO_GET)
    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, desc=f"sha256 {path.name}", unit="B",
                                     unit_scale=True) as bar:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            bar.update(len(chunk))
    for name, expected in OFFICIAL_SHA256.items():
        if digest.hexdigest() == expected:
            return name
    known = "; ".join(f"{name} {value}" for name, value in OFFICIAL_SHA256.items())
    raise HnasError(
        f"the SHA-256 of {path} is {digest.hexdigest()}, which is neither official NAS-Bench-101 file ({known}). "
        f"The download is damaged or is another file: {HOW_TO_GET}"
    )
