"""Decode the `nasbench.ModelMetrics` protocol buffer (proto2) of a NAS-Bench-101 record, without protobuf.

    message ModelMetrics   { repeated EvaluationData evaluation_data = 1; optional int32 trainable_parameters = 2;
                             optional double total_time = 3; }
    message EvaluationData { optional double current_epoch = 1; optional double training_time = 2;
                             optional double train_accuracy = 3; optional double validation_accuracy = 4;
                             optional double test_accuracy = 5; optional string checkpoint_path = 6; }

(nasbench/lib/model_metrics.proto). An absent optional field decodes to None, not to proto2's default 0, so
that a record lacking a value is reported instead of read as an accuracy of 0. As protobuf does, a scalar field
given twice keeps its last value and fields of unknown numbers are skipped by their wire type. Malformed bytes
raise ValueError with the byte position; the caller adds the file and record.
"""

import struct
from typing import NamedTuple

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class EvaluationData(NamedTuple):
    current_epoch: float = None
    training_time: float = None
    train_accuracy: float = None
    validation_accuracy: float = None
    test_accuracy: float = None
    checkpoint_path: str = None


class ModelMetrics(NamedTuple):
    evaluation_data: tuple = ()
    trainable_parameters: int = None
    total_time: float = None


# field number -> (name, wire type) of the fields each message knows
_EVALUATION_FIELDS = {
    1: ("current_epoch", _FIXED64),
    2: ("training_time", _FIXED64),
    3: ("train_accuracy", _FIXED64),
    4: ("validation_accuracy", _FIXED64),
    5: ("test_accuracy", _FIXED64),
    6: ("checkpoint_path", _LENGTH_DELIMITED),
}
_METRICS_FIELDS = {
    1: ("evaluation_data", _LENGTH_DELIMITED),
    2: ("trainable_parameters", _VARINT),
    3: ("total_time", _FIXED64),
}


def _varint(data, pos, end):
    value = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise ValueError(f"varint at byte {start} runs past the end of its message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ValueError(f"varint at byte {start} is longer than 10 bytes")


def _int32(value):
    # An int32 is written as the 64-bit varint of its sign extension; protobuf keeps the low 32 bits, signed.
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _fields(data, pos, end, known, message):
    """Yield (name, value) for each known field of the message in data[pos:end], skipping unknown ones."""
    while pos < end:
        tag_at = pos
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError(f"{message} field number 0 at byte {tag_at} (not a valid protobuf message)")
        if wire == _VARINT:
            value, pos = _varint(data, pos, end)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise ValueError(f"{message} field {number} at byte {tag_at} runs past the end of its message")
            value = data[pos:pos + size]
            pos += size
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise ValueError(f"{message} field {number} at byte {tag_at} claims {length} bytes, more than are left")
            value = (pos, pos + length)
            pos += length
        else:
            # 3 and 4 are the deprecated groups, which ModelMetrics never uses; 6 and 7 do not exist.
            raise ValueError(f"{message} field {number} at byte {tag_at} has wire type {wire}, "
                             f"which ModelMetrics never uses")
        if number not in known:
            continue
        name, expected_wire = known[number]
        if wire != expected_wire:
            raise ValueError(f"{message}.{name} at byte {tag_at} has wire type {wire}, expected {expected_wire}")
        yield name, value


def _evaluation(data, start, end):
    values = {}
    for name, value in _fields(data, start, end, _EVALUATION_FIELDS, "EvaluationData"):
        if name == "checkpoint_path":
            try:
                values[name] = bytes(data[value[0]:value[1]]).decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"EvaluationData.checkpoint_path at byte {value[0]} is not UTF-8 ({err})") from err
        else:
            values[name] = struct.unpack("<d", value)[0]
    return EvaluationData(**values)


def decode_model_metrics(data):
    """The ModelMetrics message serialized in `data` (bytes)."""
    evaluations = []
    values = {}
    for name, value in _fields(data, 0, len(data), _METRICS_FIELDS, "ModelMetrics"):
        if name == "evaluation_data":
            evaluations.append(_evaluation(data, *value))
        elif name == "trainable_parameters":
            values[name] = _int32(value)
        else:
            values[name] = struct.unpack("<d", value)[0]
    return ModelMetrics(evaluation_data=tuple(evaluations), **values)
