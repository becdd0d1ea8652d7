"""Write NAS-Bench-101 .tfrecord files in the official layout at test time (nb101.md section 6.2).

Independent of the code under test: its own bit-by-bit CRC32C, its own protobuf encoder, its own framing, so
that a reader bug is not mirrored by the writer. The records come from NASLib's 30-cell pickle; the "full"
variant adds 4/12/36-epoch runs with made-up values and shuffles all records. `synthetic_arrays` makes the
arrays of a converted table of any size (perf/bench_nb101_table.py times loading a full-size one).
"""

import base64
import json
import pickle
import random
import struct

import numpy as np

BUDGETS = (4, 12, 36, 108)
VALUES = ("training_time", "train_accuracy", "validation_accuracy", "test_accuracy")
# The 8 values of a run, in the official API's names: halfway then final x VALUES.
RUN_FIELDS = tuple(f"{when}_{what}" for when in ("halfway", "final") for what in VALUES)
TOTAL_TIME_EXTRA = 37.5  # total_time = final training time + this, as the real files' total exceeds training


def load_pkl(path):
    with open(path, "rb") as f:
        return pickle.load(f)


# ----------------------------------------------------------------------------------------------------------
# Checksums and framing


def crc32c_bitwise(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def masked(data):
    crc = crc32c_bitwise(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(payload):
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked(length)) + payload + struct.pack("<I", masked(payload))


def write_tfrecord(path, payloads):
    """Write the framed payloads; returns each record's byte offset."""
    offsets, blob = [], b""
    for payload in payloads:
        offsets.append(len(blob))
        blob += frame(payload)
    path.write_bytes(blob)
    return offsets


# ----------------------------------------------------------------------------------------------------------
# ModelMetrics (proto2), encoded field by field in field-number order as protobuf serializes


def varint(value):
    value &= (1 << 64) - 1  # negative int32 are written as their 64-bit two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(number, wire):
    return varint(number << 3 | wire)


def double_field(number, value):
    return tag(number, 1) + struct.pack("<d", value)


def bytes_field(number, data):
    return tag(number, 2) + varint(len(data)) + data


def evaluation(epoch, time, train, valid, test, checkpoint=None):
    body = b"".join(double_field(n, v) for n, v in enumerate((epoch, time, train, valid, test), start=1))
    if checkpoint is not None:
        body += bytes_field(6, checkpoint.encode())
    return body


def model_metrics(evaluations, params, total_time):
    return (b"".join(bytes_field(1, e) for e in evaluations) + tag(2, 0) + varint(params)
            + double_field(3, total_time))


def run_metrics(run, epochs, params, checkpoint=None):
    """The ModelMetrics bytes of one run (a dict of RUN_FIELDS), as nb101.md 6.2 lays them out."""
    start = evaluation(0.0, 0.0, 0.1, 0.1, 0.1)
    halfway = evaluation(epochs / 2, *(run[f"halfway_{what}"] for what in VALUES))
    final = evaluation(float(epochs), *(run[f"final_{what}"] for what in VALUES), checkpoint=checkpoint)
    return model_metrics([start, halfway, final], params, run["final_training_time"] + TOTAL_TIME_EXTRA)


def payload(module_hash, epochs, matrix, ops, metrics):
    bits = "".join(str(int(x)) for row in matrix for x in row)
    item = [module_hash, epochs, bits, ",".join(ops), base64.b64encode(metrics).decode("ascii")]
    return json.dumps(item).encode("utf-8")


# ----------------------------------------------------------------------------------------------------------
# The two synthetic files


def made_up_run(run, epochs):
    """Distinct, plausible values for a budget the pickle lacks, derived from its 108-epoch run."""
    scale = epochs / 108
    return {name: value * (scale if name.endswith("time") else 0.5 + 0.5 * scale) for name, value in run.items()}


def expected_runs(cells, full):
    """{(hash, epochs): [run dicts in repeat order]} that the synthetic file holds."""
    runs = {}
    for module_hash, (_, computed) in cells.items():
        for epochs in BUDGETS if full else (108,):
            runs[module_hash, epochs] = [run if epochs == 108 else made_up_run(run, epochs) for run in computed[108]]
    return runs


def records(cells, full=False, seed=0):
    """(module_hash, epochs, repeat, payload) of every record, in file order.

    only108: cell by cell, its 3 runs in order. full: all budgets, shuffled, so that hashes, budgets and
    repeats interleave; the i-th record of a (hash, epochs) in the file is its run i.
    """
    runs = expected_runs(cells, full)
    keys = [key for key in runs for _ in range(3)]
    if full:
        random.Random(seed).shuffle(keys)
    seen = {}
    out = []
    for number, (module_hash, epochs) in enumerate(keys):
        repeat = seen[module_hash, epochs] = seen.get((module_hash, epochs), -1) + 1
        fixed = cells[module_hash][0]
        checkpoint = f"gs://nasbench/{module_hash}/repeat_{repeat + 1}/model.ckpt" if number % 3 == 0 else None
        metrics = run_metrics(runs[module_hash, epochs][repeat], epochs, fixed["trainable_parameters"], checkpoint)
        out.append((module_hash, epochs, repeat,
                    payload(module_hash, epochs, fixed["module_adjacency"], fixed["module_operations"], metrics)))
    return out


def synthetic_arrays(n, epochs=(108,), seed=0):
    """A valid table of n made-up cells (7 vertices each), values like the real ones (float32 widened)."""
    rng = np.random.default_rng(seed)
    adjacency = np.zeros((n, 7, 7), dtype=np.uint8)
    adjacency[:, 0, 1:6] = 1
    adjacency[:, 1:6, 6] = 1
    ops = rng.integers(1, 4, size=(n, 7)).astype(np.int8)
    ops[:, 0], ops[:, 6] = 0, 4
    runs = (rng.integers(5000, 9984, size=(n, len(epochs), 3, 8)) / 9984).astype(np.float32).astype(np.float64)
    runs[..., [0, 4]] *= 3000.0
    return {"hashes": np.array([f"{i:032x}" for i in range(n)], dtype="S32"), "num_vertices": np.full(n, 7, np.int8),
            "adjacency": adjacency, "ops": ops, "params": rng.integers(200_000, 50_000_000, size=n),
            "epochs": np.array(epochs, dtype=np.int64), "runs": runs}
