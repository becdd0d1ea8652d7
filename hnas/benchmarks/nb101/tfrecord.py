"""Read the official NAS-Bench-101 `.tfrecord` files without TensorFlow.

A TFRecord file is records back to back, each: an 8-byte little-endian length N, the masked CRC32C of those 8
bytes, N bytes of payload, the masked CRC32C of the payload (checksum.py). The length checksum is always
checked: it is cheap and catches a foreign or misaligned file at its first record. The payload checksum costs
about a minute per 500 MB without a C CRC32C package, so it is optional (`check_data`).

An NB101 payload is the UTF-8 JSON list `[module_hash, epochs, raw_adjacency, raw_operations, raw_metrics]`:
the adjacency as its 0/1 entries row-major in one string, the op names joined by commas, and the base64 of a
serialized ModelMetrics message (model_metrics.py). One record is one training run of one cell at one budget.
Every problem is an HnasError naming the file, the record (counted from 1) and its byte offset.
"""

import base64
import binascii
import json
import struct
from pathlib import Path
from typing import NamedTuple

from hnas.benchmarks.nb101.checksum import masked_crc32c
from hnas.benchmarks.nb101.model_metrics import decode_model_metrics
from hnas.benchmarks.nb101.schema import BUDGETS, check_hash, check_spec
from hnas.errors import HnasError

_EVALUATION_VALUES = ("training_time", "train_accuracy", "validation_accuracy", "test_accuracy")


class Record(NamedTuple):
    """One run as the official API reads it; `run` holds the 8 values of schema.RUN_FIELDS in that order."""

    module_hash: str
    epochs: int
    adjacency: str
    ops: tuple
    trainable_parameters: int
    run: tuple


def iter_payloads(path, check_data=True):
    """Yield (record number from 1, byte offset, payload bytes) for every record of a TFRecord file."""
    path = Path(path)
    with open(path, "rb") as f:
        number, offset = 1, 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise _damaged(path, number, offset,
                               f"truncated: the file ends {len(header)} bytes into the 12-byte header")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise _damaged(path, number, offset, "the checksum of the length field does not match: the file is "
                               "damaged here, or is not a TFRecord file")
            body = f.read(length + 4)
            if len(body) < length + 4:
                raise _damaged(path, number, offset, f"truncated: the record needs {length + 4} bytes after its "
                               f"header, the file has {len(body)} left")
            payload = body[:length]
            if check_data and masked_crc32c(payload) != struct.unpack("<I", body[length:])[0]:
                raise _damaged(path, number, offset, "the checksum of the payload does not match: the file is damaged")
            yield number, offset, payload
            number += 1
            offset += 12 + length + 4


def read_records(path, check_data=True):
    """Yield a Record for every record of an NB101 .tfrecord file, in file order."""
    for number, offset, payload in iter_payloads(path, check_data):
        try:
            yield parse_payload(payload)
        except ValueError as err:  # parse_payload's way of saying "malformed"; json and base64 errors included
            raise _error(path, number, offset, str(err)) from err


def parse_payload(payload):
    """The Record of one NB101 payload (bytes). Raises ValueError saying what is malformed."""
    try:
        item = json.loads(payload)
    except ValueError as err:
        raise ValueError(f"the payload is not JSON text ({err})") from err
    if not isinstance(item, list) or len(item) != 5:
        raise ValueError("the payload is not the JSON list [module_hash, epochs, adjacency, operations, metrics]")
    module_hash, epochs, adjacency, operations, raw_metrics = item
    check_hash(module_hash)
    if type(epochs) is not int or epochs not in BUDGETS:
        raise ValueError(f"epochs {epochs!r} is not an NB101 budget {BUDGETS}")
    if not isinstance(adjacency, str) or not isinstance(operations, str) or not isinstance(raw_metrics, str):
        raise ValueError("the adjacency, operations and metrics must be strings")
    ops = tuple(operations.split(","))
    check_spec(adjacency, ops)
    try:
        metrics = decode_model_metrics(base64.b64decode(raw_metrics, validate=True))
    except binascii.Error as err:
        raise ValueError(f"the metrics are not valid base64 ({err})") from err
    except ValueError as err:
        raise ValueError(f"the metrics are not a valid ModelMetrics message: {err}") from err
    return Record(module_hash, epochs, adjacency, ops, _parameters(metrics), _run_values(metrics))


def _parameters(metrics):
    if metrics.trainable_parameters is None or metrics.trainable_parameters <= 0:
        raise ValueError(f"ModelMetrics.trainable_parameters is {metrics.trainable_parameters}, "
                         f"expected a positive count")
    return metrics.trainable_parameters


def _run_values(metrics):
    # The official API reads evaluation_data[1] as the halfway and [2] as the final evaluation ([0]: epoch 0).
    evaluations = metrics.evaluation_data
    if len(evaluations) < 3:
        raise ValueError(f"ModelMetrics has {len(evaluations)} evaluations, expected 3 (start, halfway, final)")
    values = []
    for which, evaluation in (("halfway", evaluations[1]), ("final", evaluations[2])):
        for name in _EVALUATION_VALUES:
            value = getattr(evaluation, name)
            if value is None:
                raise ValueError(f"the {which} evaluation has no {name}")
            values.append(value)
    return tuple(values)


def _error(path, number, offset, problem):
    return HnasError(f"{path}: record {number} (at byte {offset}): {problem}")


def _damaged(path, number, offset, problem):
    return _error(path, number, offset, f"{problem}. Download the file again (--sha256 checks a download against "
                                        f"the official SHA-256)")
