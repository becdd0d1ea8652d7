"""The NAS-Bench-101 benchmark without TensorFlow: the .tfrecord reader, the compact table, the converter.

The .tfrecord files are written at test time (tests/nb101_records.py) in the official layout from NASLib's
30-cell pickle, and every value read back is compared with the pickle's, computed here independently.
"""

import base64
import hashlib
import json
import pickle
import struct
import tomllib
from collections import defaultdict

import numpy as np
import pytest

import nb101_records as writer
from conftest import DATA, REPO
from hnas.benchmarks import nb101
from hnas.benchmarks.nb101 import checksum, convert
from hnas.benchmarks.nb101.model_metrics import decode_model_metrics
from hnas.benchmarks.nb101.tfrecord import iter_payloads, parse_payload, read_records
from hnas.errors import HnasError
from hnas.spaces.nb101.hashing import spec_hash

PKL = DATA / "naslib-test-assets" / "nb101_dummy.pkl"
ZC = DATA / "naslib-zc-proxies" / "zc_nasbench101.json"
needs_pkl = pytest.mark.skipif(not PKL.is_file(), reason=f"needs NASLib's nb101_dummy.pkl in {PKL.parent}: "
                               "run with HNAS_DATA_DIR=../shared/data")
needs_zc = pytest.mark.skipif(not ZC.is_file(), reason=f"needs {ZC}: run with HNAS_DATA_DIR=../shared/data")
SPLIT_KEYS = {"train": "final_train_accuracy", "valid": "final_validation_accuracy", "test": "final_test_accuracy"}


def bits(values):
    """The exact binary64 patterns of some floats: equal only if every double is identical."""
    return [float(v).hex() for v in values]


@pytest.fixture(scope="module")
def cells():
    if not PKL.is_file():
        pytest.skip(f"needs {PKL}")
    return writer.load_pkl(PKL)


def _write(directory, records, name):
    path = directory / name
    offsets = writer.write_tfrecord(path, [payload for *_, payload in records])
    return path, offsets


@pytest.fixture(scope="module")
def only108(cells, tmp_path_factory):
    records = writer.records(cells)
    path, offsets = _write(tmp_path_factory.mktemp("tfrecord"), records, "nasbench_only108.tfrecord")
    return path, offsets, records


@pytest.fixture(scope="module")
def full(cells, tmp_path_factory):
    records = writer.records(cells, full=True)
    path, offsets = _write(tmp_path_factory.mktemp("tfrecord"), records, "nasbench_full.tfrecord")
    return path, offsets, records


@pytest.fixture(scope="module")
def table(only108):
    return nb101.table_from_tfrecord(only108[0], progress=False)


# ----------------------------------------------------------------------------------------------------------
# Checksums


def test_crc32c_check_value_and_tfrecord_mask():
    assert checksum.crc32c_python(b"123456789") == 0xE3069283
    assert checksum.crc32c(b"123456789") == 0xE3069283
    data = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    assert checksum.crc32c_python(data) == writer.crc32c_bitwise(data)
    assert checksum.masked_crc32c(data) == writer.masked(data)
    assert checksum.masked_crc32c(b"") == (0xA282EAD8 + 0) & 0xFFFFFFFF  # CRC32C of nothing is 0


@pytest.mark.skipif(checksum.BACKEND == "pure Python", reason="neither google_crc32c nor crc32c is installed")
def test_installed_crc32c_package_agrees_with_pure_python():
    data = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    assert checksum.crc32c(data) == checksum.crc32c_python(data)


# ----------------------------------------------------------------------------------------------------------
# Reading records


@needs_pkl
def test_only108_records_equal_the_pickle(cells, only108):
    path, _, _ = only108
    records = list(read_records(path))
    assert len(records) == 90 and {r.epochs for r in records} == {108}
    groups = defaultdict(list)
    for record in records:
        groups[record.module_hash].append(record)
    assert set(groups) == set(cells)
    for module_hash, group in groups.items():
        fixed, computed = cells[module_hash]
        assert [bits(r.run) for r in group] == [bits(run[f] for f in writer.RUN_FIELDS) for run in computed[108]]
        for record in group:
            assert record.adjacency == "".join(str(x) for x in fixed["module_adjacency"].flat)
            assert record.ops == tuple(fixed["module_operations"])
            assert record.trainable_parameters == fixed["trainable_parameters"]


@needs_pkl
def test_full_file_in_any_order_aggregates_by_order_of_appearance(cells, full):
    path, _, records = full
    keys = [(h, e) for h, e, _, _ in records]
    assert sum(a[1] != b[1] for a, b in zip(keys, keys[1:])) > 200  # budgets interleave in the file
    assert len(keys) == 360 and len(set(keys)) == 120
    table = nb101.table_from_tfrecord(path, progress=False)
    assert table.epochs == (4, 12, 36, 108) and len(table) == 30
    for (module_hash, epochs), runs in writer.expected_runs(cells, full=True).items():
        got = table.runs(module_hash, epochs)
        assert [bits(r.values()) for r in got] == [bits(run[f] for f in writer.RUN_FIELDS) for run in runs]
    assert tuple(nb101.RUN_FIELDS) == writer.RUN_FIELDS  # the official API's names, in its order


@needs_pkl
def test_every_record_rehashes_to_its_module_hash(only108, full):
    for path in (only108[0], full[0]):
        for record in read_records(path):
            n = len(record.ops)
            matrix = [[int(c) for c in record.adjacency[i * n:(i + 1) * n]] for i in range(n)]
            assert spec_hash(matrix, record.ops) == record.module_hash


@needs_pkl
def test_fixed_values_come_from_the_first_record_of_a_hash(cells, tmp_path):
    records = writer.records(cells)
    module_hash, epochs, repeat, _ = records[2]  # the last run of the first cell says something else
    fixed, computed = cells[module_hash]
    other = writer.run_metrics(computed[108][repeat], epochs, fixed["trainable_parameters"] + 1000)
    records[2] = (module_hash, epochs, repeat,
                  writer.payload(module_hash, epochs, fixed["module_adjacency"], fixed["module_operations"], other))
    path, _ = _write(tmp_path, records, "changed.tfrecord")
    assert nb101.table_from_tfrecord(path, progress=False).params(module_hash) == fixed["trainable_parameters"]


@pytest.fixture(scope="module")
def protobuf_metrics():
    """A ModelMetrics class built at run time from the .proto's descriptor (nasbench/lib/model_metrics.proto)."""
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="nb101_model_metrics_test.proto", package="nasbench", syntax="proto2")
    evaluation = proto.message_type.add(name="EvaluationData")
    for number, name in enumerate(("current_epoch", "training_time", "train_accuracy", "validation_accuracy",
                                   "test_accuracy"), start=1):
        evaluation.field.add(name=name, number=number, type=field.TYPE_DOUBLE, label=field.LABEL_OPTIONAL)
    evaluation.field.add(name="checkpoint_path", number=6, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    metrics = proto.message_type.add(name="ModelMetrics")
    metrics.field.add(name="evaluation_data", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                      type_name=".nasbench.EvaluationData")
    metrics.field.add(name="trainable_parameters", number=2, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    metrics.field.add(name="total_time", number=3, type=field.TYPE_DOUBLE, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("nasbench.ModelMetrics"))


def _as_protobuf_reads_it(message):
    def optional(msg, name):
        return getattr(msg, name) if msg.HasField(name) else None

    evaluations = tuple(tuple(optional(e, name) for name in ("current_epoch", "training_time", "train_accuracy",
                                                              "validation_accuracy", "test_accuracy", "checkpoint_path"))
                        for e in message.evaluation_data)
    return evaluations, optional(message, "trainable_parameters"), optional(message, "total_time")


def _as_we_read_it(data):
    ours = decode_model_metrics(data)
    return tuple(tuple(e) for e in ours.evaluation_data), ours.trainable_parameters, ours.total_time


@needs_pkl
def test_protobuf_parses_every_payload_the_same(only108, full, protobuf_metrics):
    checkpoints = 0
    for path in (only108[0], full[0]):
        for _, _, payload in iter_payloads(path):
            raw = base64.b64decode(json.loads(payload)[4])
            message = protobuf_metrics()
            message.ParseFromString(raw)
            assert _as_we_read_it(raw) == _as_protobuf_reads_it(message)
            assert message.SerializeToString() == raw  # the writer's bytes are protobuf's canonical ones
            checkpoints += message.evaluation_data[2].HasField("checkpoint_path")
    assert 0 < checkpoints < 450  # some records carry a checkpoint path, others none


def _unknown_fields():
    return (writer.tag(7, 0) + writer.varint(300) + writer.tag(8, 1) + struct.pack("<d", 1.5)
            + writer.bytes_field(9, b"ignored") + writer.tag(10, 5) + struct.pack("<f", 2.5))


def _with_unknown_fields():
    """A ModelMetrics message, and the same with unknown fields of every wire type in both message types."""
    evaluations = [writer.evaluation(0.0, 0.0, 0.1, 0.1, 0.1), writer.evaluation(54.0, 10.0, 0.5, 0.4, 0.3),
                   writer.evaluation(108.0, 20.0, 1.0, 0.9, 0.8, checkpoint="ckpt")]
    clean = writer.model_metrics(evaluations, 1234, 25.0)
    noisy = writer.model_metrics([e + _unknown_fields() for e in evaluations], 1234, 25.0) + _unknown_fields()
    return clean, noisy


def test_unknown_fields_of_every_wire_type_are_skipped():
    clean, noisy = _with_unknown_fields()
    assert decode_model_metrics(noisy) == decode_model_metrics(clean)
    ours = decode_model_metrics(clean)
    assert ours.trainable_parameters == 1234 and ours.total_time == 25.0
    assert ours.evaluation_data[2].checkpoint_path == "ckpt" and ours.evaluation_data[1].checkpoint_path is None
    assert ours.evaluation_data[1].validation_accuracy == 0.4 and ours.evaluation_data[1].current_epoch == 54.0


def test_protobuf_skips_the_same_unknown_fields(protobuf_metrics):
    _, noisy = _with_unknown_fields()
    message = protobuf_metrics()
    message.ParseFromString(noisy)
    assert _as_protobuf_reads_it(message) == _as_we_read_it(noisy)


INT32_CASES = [(-5, -5), (2**31 - 1, 2**31 - 1), (-(2**31), -(2**31)), (2**32 + 9, 9)]


@pytest.mark.parametrize("written, read", INT32_CASES)
def test_int32_is_sign_extended_and_truncated(written, read):
    assert decode_model_metrics(writer.tag(2, 0) + writer.varint(written)).trainable_parameters == read


@pytest.mark.parametrize("written, read", INT32_CASES)
def test_protobuf_reads_int32_the_same(protobuf_metrics, written, read):
    message = protobuf_metrics()
    message.ParseFromString(writer.tag(2, 0) + writer.varint(written))
    assert message.trainable_parameters == read


# ----------------------------------------------------------------------------------------------------------
# Damaged and malformed records: each names the file, the record and its byte offset


def _json_payload(item):
    return json.dumps(item).encode()


def _good_item(cells):
    module_hash = sorted(cells)[0]
    fixed, computed = cells[module_hash]
    metrics = writer.run_metrics(computed[108][0], 108, fixed["trainable_parameters"])
    return [module_hash, 108, "".join(str(x) for x in fixed["module_adjacency"].flat),
            ",".join(fixed["module_operations"]), base64.b64encode(metrics).decode()]


def _metrics_b64(data):
    return base64.b64encode(data).decode()


_EVALUATIONS = [writer.evaluation(0.0, 0.0, 0.1, 0.1, 0.1), writer.evaluation(54.0, 1.0, 0.5, 0.5, 0.5),
                writer.evaluation(108.0, 2.0, 0.9, 0.9, 0.9)]
BAD_PAYLOADS = {
    "not_json": (lambda item: b"\xff not json", "not JSON text"),
    "four_items": (lambda item: _json_payload(item[:4]), "not the JSON list [module_hash, epochs"),
    "not_a_list": (lambda item: _json_payload({"hash": item[0]}), "not the JSON list"),
    "bad_hash": (lambda item: _json_payload(["xyz"] + item[1:]), "'xyz' is not 32 lowercase hex digits"),
    "bad_epochs": (lambda item: _json_payload(item[:1] + [100] + item[2:]), "epochs 100 is not an NB101 budget"),
    "non_square": (lambda item: _json_payload(item[:2] + [item[2][:-1]] + item[3:]), "(not square)"),
    "wrong_size": (lambda item: _json_payload(item[:2] + [item[2][:36]] + item[3:]), "(6x6)"),
    "not_binary": (lambda item: _json_payload(item[:2] + [item[2].replace("1", "2", 1)] + item[3:]), "other than 0 and 1"),
    "backward_edge": (lambda item: _json_payload(item[:2] + ["1" + item[2][1:]] + item[3:]), "not strictly upper"),
    "unknown_op": (lambda item: _json_payload(item[:3] + [item[3].replace("maxpool3x3", "avgpool3x3")
                                                          .replace("conv1x1-bn-relu", "avgpool3x3")] + item[4:]), "are not 'input'"),
    "bad_base64": (lambda item: _json_payload(item[:4] + ["abc*def"]), "not valid base64"),
    "cut_metrics": (lambda item: _json_payload(item[:4] + [_metrics_b64(base64.b64decode(item[4])[:40])]),
                    "not a valid ModelMetrics message: ModelMetrics field 1 at byte 0 claims 45 bytes, more than are left"),
    "wrong_wire_type": (lambda item: _json_payload(item[:4] + [_metrics_b64(writer.tag(2, 1) + bytes(8))]),
                        "ModelMetrics.trainable_parameters at byte 0 has wire type 1, expected 0"),
    "group_wire_type": (lambda item: _json_payload(item[:4] + [_metrics_b64(writer.tag(5, 3))]), "wire type 3"),
    "two_evaluations": (lambda item: _json_payload(item[:4] + [_metrics_b64(writer.model_metrics(_EVALUATIONS[:2], 9, 1.0))]),
                        "has 2 evaluations, expected 3"),
    "no_validation": (lambda item: _json_payload(item[:4] + [_metrics_b64(writer.model_metrics(
        _EVALUATIONS[:2] + [writer.evaluation(108.0, 2.0, 0.9, 0.9, 0.9)[:27]], 9, 1.0))]),
        "the final evaluation has no validation_accuracy"),
    "no_parameters": (lambda item: _json_payload(item[:4] + [_metrics_b64(b"".join(writer.bytes_field(1, e) for e in _EVALUATIONS))]),
                      "trainable_parameters is None"),
}


@needs_pkl
@pytest.mark.parametrize("name", sorted(BAD_PAYLOADS))
def test_malformed_payload_names_the_record(cells, only108, tmp_path, name):
    make, expected = BAD_PAYLOADS[name]
    records = only108[2][:4]
    payloads = [payload for *_, payload in records]
    payloads[2] = make(_good_item(cells))
    path = tmp_path / f"{name}.tfrecord"
    offsets = writer.write_tfrecord(path, payloads)
    with pytest.raises(HnasError) as err:
        list(read_records(path))
    assert f"{path}: record 3 (at byte {offsets[2]}): " in str(err.value)
    assert expected in str(err.value)


def _four_records(only108, tmp_path):
    path, offsets, _ = only108
    damaged = tmp_path / "damaged.tfrecord"
    return damaged, bytearray(path.read_bytes()[:offsets[4]]), offsets


@needs_pkl
def test_a_flipped_payload_byte_fails_the_data_checksum(only108, tmp_path):
    damaged, blob, offsets = _four_records(only108, tmp_path)
    hash_at = offsets[2] + 12 + 2  # inside the module hash of record 3: the JSON stays valid
    blob[hash_at] = ord("0") if blob[hash_at] != ord("0") else ord("1")
    damaged.write_bytes(bytes(blob))
    with pytest.raises(HnasError, match=f"record 3 \\(at byte {offsets[2]}\\): the checksum of the payload"):
        list(read_records(damaged))
    # Without the payload check the damage goes unseen: why the converter checks by default.
    read = list(read_records(damaged, check_data=False))
    assert len(read) == 4 and read[2].module_hash != only108[2][2][0]


@needs_pkl
def test_a_flipped_length_byte_fails_the_length_checksum(only108, tmp_path):
    damaged, blob, offsets = _four_records(only108, tmp_path)
    blob[offsets[2]] ^= 0x01
    damaged.write_bytes(bytes(blob))
    for check_data in (True, False):  # always checked
        with pytest.raises(HnasError, match=f"{damaged}: record 3 \\(at byte {offsets[2]}\\): the checksum of the length"):
            list(read_records(damaged, check_data=check_data))


@needs_pkl
@pytest.mark.parametrize("cut, expected", [(5, "ends 5 bytes into the 12-byte header"), (100, "the file has 88 left")])
def test_a_truncated_file_is_named_at_its_last_record(only108, tmp_path, cut, expected):
    damaged, blob, offsets = _four_records(only108, tmp_path)
    damaged.write_bytes(bytes(blob[:offsets[3] + cut]))
    with pytest.raises(HnasError) as err:
        list(read_records(damaged))
    assert f"record 4 (at byte {offsets[3]}): truncated" in str(err.value) and expected in str(err.value)


def test_a_file_that_is_not_a_tfrecord(tmp_path):
    path = tmp_path / "nasbench_only108.tfrecord"
    path.write_text('{"this": "is json, not a tfrecord"}\n')
    with pytest.raises(HnasError, match="record 1 \\(at byte 0\\): the checksum of the length field"):
        list(read_records(path))


def test_parse_payload_of_a_valid_record():
    metrics = writer.model_metrics(_EVALUATIONS, 882_570, 3.5)
    record = parse_payload(_json_payload(["043721b9c7fe8c5fad811d47d83132ec", 4, "0100", "input,output",
                                          _metrics_b64(metrics)]))
    assert record == nb101.Record("043721b9c7fe8c5fad811d47d83132ec", 4, "0100", ("input", "output"), 882_570,
                                  (1.0, 0.5, 0.5, 0.5, 2.0, 0.9, 0.9, 0.9))


# ----------------------------------------------------------------------------------------------------------
# Aggregation rules and the NASLib pickle


@needs_pkl
def test_a_missing_run_or_a_file_given_twice_is_reported(only108, tmp_path):
    path, offsets, records = only108
    short = tmp_path / "short.tfrecord"
    short.write_bytes(path.read_bytes()[:offsets[-1]])
    with pytest.raises(HnasError, match=f"incomplete: cell {records[-1][0]} has 2 of 3 runs at 108 epochs"):
        nb101.table_from_tfrecord(short, progress=False)
    twice = tmp_path / "twice.tfrecord"
    twice.write_bytes(path.read_bytes() * 2)
    with pytest.raises(HnasError, match="more than 3 runs of cell .* at 108 epochs"):
        nb101.table_from_tfrecord(twice, progress=False)


@needs_pkl
def test_the_pickle_gives_the_same_table_as_the_tfrecord(table):
    from_pickle = nb101.table_from_naslib_pickle(PKL, trust_pickle=True)
    ours, theirs = table.arrays(), from_pickle.arrays()
    assert set(ours) == set(theirs)
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype, name
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


@needs_pkl
def test_a_pickle_is_read_only_when_allowed():
    with pytest.raises(HnasError, match="can run any code it holds.*--trust-pickle"):
        nb101.table_from_naslib_pickle(PKL)


@needs_pkl
def test_a_malformed_pickle_names_the_cell(cells, tmp_path):
    module_hash = sorted(cells)[3]
    fixed, computed = cells[module_hash]
    broken = dict(cells)
    broken[module_hash] = ({**fixed, "module_operations": ["input", "conv5x5", "output"]}, computed)
    path = tmp_path / "broken.pkl"
    path.write_bytes(pickle.dumps(broken))
    with pytest.raises(HnasError, match=f"cell '{module_hash}' is not in NASLib's NB101 layout: "
                                        "the adjacency has 49 entries \\(7x7\\); 3 ops need 3x3"):
        nb101.table_from_naslib_pickle(path, trust_pickle=True)
    percent = dict(cells)
    percent[module_hash] = (fixed, {108: [{**run, "final_test_accuracy": 100 * run["final_test_accuracy"]}
                                          for run in computed[108]]})
    path.write_bytes(pickle.dumps(percent))
    with pytest.raises(HnasError, match=f"gives values an NB101 table cannot hold: row 3 \\(hash {module_hash}\\): "
                                        "an accuracy is outside 0..1"):
        nb101.table_from_naslib_pickle(path, trust_pickle=True)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(HnasError, match="holds a list, not NASLib's dict"):
        nb101.table_from_naslib_pickle(path, trust_pickle=True)


# ----------------------------------------------------------------------------------------------------------
# Queries, against values computed here from the pickle


@needs_pkl
def test_queries_match_the_pickle(table, cells):
    assert table.hashes == tuple(sorted(cells)) and len(table) == 30 and table.partial
    for row, module_hash in enumerate(sorted(cells)):
        fixed, computed = cells[module_hash]
        runs = computed[108]
        for split, key in SPLIT_KEYS.items():
            values = [run[key] for run in runs]
            assert table.accuracy(module_hash, split) == 100 * (sum(values) / 3)
            assert table.accuracy(row, split) == 100 * (sum(values) / 3)
            for repeat in range(3):
                assert table.accuracy(module_hash, split, epochs=108, repeat=repeat) == 100 * values[repeat]
        times = [run["final_training_time"] for run in runs]
        assert table.train_time(module_hash) == sum(times) / 3
        assert table.train_time(module_hash, 108, repeat=2) == times[2]
        assert table.params(module_hash) == fixed["trainable_parameters"]
        assert table.spec(module_hash) == (tuple(map(tuple, fixed["module_adjacency"].tolist())),
                                           tuple(fixed["module_operations"]))
        assert table.row(module_hash) == row
    assert table.accuracy(0, "test", "108") == table.accuracy(0, "test", 108)


@needs_pkl
@pytest.mark.parametrize("make_rng, draw", [(np.random.default_rng, lambda rng: rng.integers(3)),
                                            (np.random.RandomState, lambda rng: rng.randint(3))])
def test_a_random_repeat_is_reproducible_from_its_rng(table, cells, make_rng, draw):
    hashes = sorted(cells)
    rng, again = make_rng(7), make_rng(7)
    got = [table.accuracy(h, "valid", repeat="random", rng=rng) for h in hashes]
    assert got == [table.accuracy(h, "valid", repeat="random", rng=again) for h in hashes]
    reference = make_rng(7)
    picks = [int(draw(reference)) for _ in hashes]
    assert len(set(picks)) == 3  # the draws really vary, so the comparison below can fail
    assert got == [100 * cells[h][1][108][pick]["final_validation_accuracy"] for h, pick in zip(hashes, picks)]
    rng, reference = make_rng(3), make_rng(3)
    times = [table.train_time(h, repeat="random", rng=rng) for h in hashes]
    assert times == [cells[h][1][108][int(draw(reference))]["final_training_time"] for h in hashes]


@needs_pkl
def test_columns_hold_every_row_in_row_order(table, cells):
    hashes = sorted(cells)
    for split, key in SPLIT_KEYS.items():
        assert table.column(split).tolist() == [100 * (sum(r[key] for r in cells[h][1][108]) / 3) for h in hashes]
        assert table.column(split, repeat=1).tolist() == [100 * cells[h][1][108][1][key] for h in hashes]
    reference = np.random.default_rng(5)
    picks = reference.integers(3, size=len(hashes))
    assert table.column("test", repeat="random", rng=np.random.default_rng(5)).tolist() == [
        100 * cells[h][1][108][pick]["final_test_accuracy"] for h, pick in zip(hashes, picks)]


@needs_pkl
@pytest.mark.parametrize("call, expected", [
    (lambda t: t.accuracy("0" * 32), "module hash '00000000000000000000000000000000' is not in the table"),
    (lambda t: t.accuracy("ff9713ff8e7d4d6a2ea61994a8bdd447", epochs=12),
     "has results after 108 epochs, not 12 (the 4/12/36-epoch budgets need a table converted from nasbench_full"),
    (lambda t: t.train_time(0, epochs=True), "not True"),
    (lambda t: t.accuracy(0, split="validation"), "choose one of: train, valid, test"),
    (lambda t: t.accuracy(0, repeat=3), "choose one of: 'mean', 0, 1, 2, 'random'"),
    (lambda t: t.train_time(0, repeat="max"), "unknown NB101 repeat 'max'"),
    (lambda t: t.column(repeat="random"), 'repeat="random" needs rng='),
    (lambda t: t.params(30), "row 30 is out of range: the table None has rows 0..29"),
    (lambda t: t.spec(1.5), "expected an NB101 module hash (str) or a row index (int), got 1.5"),
])
def test_bad_queries_explain_themselves(table, call, expected):
    with pytest.raises(HnasError) as err:
        call(table)
    assert expected in str(err.value)


@needs_pkl
def test_full_table_queries_every_budget(cells, full):
    table = nb101.table_from_tfrecord(full[0], progress=False)
    expected = writer.expected_runs(cells, full=True)
    for module_hash in sorted(cells)[:5]:
        for epochs in (4, 12, 36, 108):
            runs = expected[module_hash, epochs]
            assert table.accuracy(module_hash, "test", epochs) == 100 * (sum(r["final_test_accuracy"] for r in runs) / 3)
            assert table.train_time(module_hash, epochs, repeat=0) == runs[0]["final_training_time"]
    with pytest.raises(HnasError, match="has results after 4, 12, 36, 108 epochs, not 200$"):
        table.accuracy(0, epochs=200)


# ----------------------------------------------------------------------------------------------------------
# The table file


def test_table_file_round_trip_and_cache(tmp_path):
    built = nb101.NB101Table(writer.synthetic_arrays(50, epochs=(4, 12, 36, 108)))
    path = nb101.save_table(built, tmp_path / "t.npz")
    loaded = nb101.load_table(path)
    assert loaded.path == path.resolve() and loaded.epochs == (4, 12, 36, 108) and len(loaded) == 50
    for name, array in built.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[name], array, err_msg=name)
    assert loaded.runs(7, 36) == built.runs(7, 36)
    assert nb101.load_table(path) is loaded
    nb101.save_table(nb101.NB101Table(writer.synthetic_arrays(20)), path)
    assert len(nb101.load_table(path)) == 20  # a rewritten file is read again
    assert not list(tmp_path.glob("*.part"))


def test_default_path_is_in_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path))
    assert nb101.default_path() == tmp_path / "nb101" / "nb101.npz"
    with pytest.raises(HnasError, match="(?s)NAS-Bench-101 table not found.*hnas-nb101-convert --tfrecord"):
        nb101.load_table()


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _mutated(**changes):
    arrays = {"format": np.array("hnas-nb101-table"), "version": np.array(1), "run_fields": np.array(nb101.RUN_FIELDS),
              **writer.synthetic_arrays(10)}
    for name, change in changes.items():
        if change is None:
            del arrays[name]
        else:
            arrays[name] = change(arrays[name])
    return arrays


def _set(index, value):
    def change(array):
        array = array.copy()
        array[index] = value
        return array
    return change


DAMAGED_TABLES = {
    "random_bytes": (lambda p: p.write_bytes(b"\x00garbage" * 100), "not a readable .npz file"),
    "truncated": (lambda p: (_npz(p, **_mutated()), p.write_bytes(p.read_bytes()[:3000])), "not a readable .npz file"),
    "single_npy": (lambda p: np.save(open(p, "wb"), np.zeros(3)), "a single .npy array"),
    "foreign_npz": (lambda p: _npz(p, x=np.zeros(3)), "no format marker 'hnas-nb101-table'"),
    "newer_version": (lambda p: _npz(p, **_mutated(version=lambda v: np.array(2))), "format version 2, this hnas reads version 1"),
    "missing_array": (lambda p: _npz(p, **_mutated(params=None)), "array(s) params missing"),
    "wrong_dtype": (lambda p: _npz(p, **_mutated(runs=lambda a: a.astype(np.float32))), "runs has dtype float32"),
    "wrong_shape": (lambda p: _npz(p, **_mutated(ops=lambda a: a[:, :6])), "ops has shape (10, 6), expected (10, 7)"),
    "unsorted": (lambda p: _npz(p, **_mutated(hashes=lambda a: a[::-1].copy())), "row 0 (hash 00000000000000000000000000000009): rows are not sorted"),
    "percent": (lambda p: _npz(p, **_mutated(runs=_set((4, 0, 1, 6), 93.5))), "row 4 (hash 00000000000000000000000000000004): an accuracy is outside 0..1"),
    "nan": (lambda p: _npz(p, **_mutated(runs=_set((2, 0, 0, 0), np.nan))), "row 2 (hash 00000000000000000000000000000002): a run value is not a finite"),
    "bad_op": (lambda p: _npz(p, **_mutated(ops=_set((5, 3), 4))), "row 5 (hash 00000000000000000000000000000005): its ops are not"),
    "backward_edge": (lambda p: _npz(p, **_mutated(adjacency=_set((6, 3, 2), 1))), "row 6 (hash 00000000000000000000000000000006): its adjacency"),
    "edge_past_the_cell": (lambda p: _npz(p, **_mutated(num_vertices=_set(1, 6))), "row 1 (hash 00000000000000000000000000000001): its adjacency"),
    "bad_budget": (lambda p: _npz(p, **_mutated(epochs=lambda a: np.array([100]))), "epochs [100] are not increasing NB101 budgets"),
}


@pytest.mark.parametrize("name", sorted(DAMAGED_TABLES))
def test_a_damaged_or_foreign_table_file_is_named(tmp_path, name):
    write, expected = DAMAGED_TABLES[name]
    path = tmp_path / f"{name}.npz"
    write(path)
    with pytest.raises(HnasError) as err:
        nb101.load_table(path)
    assert f"{path} is not a usable NAS-Bench-101 table" in str(err.value) and expected in str(err.value)


@pytest.mark.slow
def test_a_full_size_table_round_trips(tmp_path):
    """Its load time is a figure of perf/bench_nb101_table.py, not an assertion here."""
    path = nb101.save_table(nb101.NB101Table(writer.synthetic_arrays(nb101.NUM_CELLS)), tmp_path / "full.npz")
    loaded = nb101.load_table(path)
    assert len(loaded) == nb101.NUM_CELLS and not loaded.partial
    assert loaded.row(f"{nb101.NUM_CELLS - 1:032x}") == nb101.NUM_CELLS - 1


# ----------------------------------------------------------------------------------------------------------
# The converter command


def test_the_console_script_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["hnas-nb101-convert"] == "hnas.benchmarks.nb101.convert:main"


@needs_pkl
def test_convert_tfrecord_end_to_end(only108, full, cells, tmp_path, capsys):
    out = tmp_path / "nb101.npz"
    assert convert.main(["--tfrecord", str(only108[0]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 30 cells with results after 108 epochs to {out}" in printed and "partial table" in printed
    assert f"CRC32C in {checksum.BACKEND}" in printed
    table = nb101.load_table(out)
    module_hash = sorted(cells)[11]
    test = [run["final_test_accuracy"] for run in cells[module_hash][1][108]]
    assert table.accuracy(module_hash, "test") == 100 * (sum(test) / 3)
    out_full = tmp_path / "full.npz"
    assert convert.main(["--tfrecord", str(full[0]), "--no-check-data", "--out", str(out_full)]) == 0
    assert "after 4, 12, 36, 108 epochs" in capsys.readouterr().out
    assert nb101.load_table(out_full).epochs == (4, 12, 36, 108)


@needs_pkl
def test_convert_checks_the_official_sha256(only108, tmp_path, capsys, monkeypatch):
    digest = hashlib.sha256(only108[0].read_bytes()).hexdigest()
    args = ["--tfrecord", str(only108[0]), "--sha256", "--out", str(tmp_path / "t.npz")]
    assert convert.main(args) == 1
    err = capsys.readouterr().err
    assert f"the SHA-256 of {only108[0]} is {digest}, which is neither official" in err
    assert nb101.OFFICIAL_SHA256["nasbench_only108.tfrecord"] in err
    monkeypatch.setitem(nb101.OFFICIAL_SHA256, "nasbench_only108.tfrecord", digest)
    assert convert.main(args) == 0
    assert "is the official nasbench_only108.tfrecord (SHA-256 matches)" in capsys.readouterr().out


@needs_pkl
def test_convert_naslib_pickle_needs_the_flag(table, tmp_path, capsys):
    out = tmp_path / "pkl.npz"
    assert convert.main(["--naslib-pkl", str(PKL), "--out", str(out)]) == 1
    assert "loading a pickle can run any code" in capsys.readouterr().err and not out.exists()
    assert convert.main(["--naslib-pkl", str(PKL), "--trust-pickle", "--out", str(out)]) == 0
    np.testing.assert_array_equal(nb101.load_table(out).arrays()["runs"], table.arrays()["runs"])
    with pytest.raises(SystemExit):
        convert.main(["--naslib-pkl", str(PKL), "--trust-pickle", "--sha256", "--out", str(out)])


def test_convert_reports_a_missing_or_wrong_file(tmp_path, capsys):
    assert convert.main(["--tfrecord", str(tmp_path / "absent.tfrecord"), "--out", str(tmp_path / "t.npz")]) == 1
    assert "NAS-Bench-101 .tfrecord file not found" in capsys.readouterr().err
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    assert convert.main(["--tfrecord", str(empty), "--out", str(tmp_path / "t.npz")]) == 1
    assert "holds no NAS-Bench-101 runs" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# NASLib's zero-cost JSON


@needs_zc
def test_zero_cost_json_is_read_as_plain_data():
    scores = nb101.read_zc_proxies(ZC)
    raw = json.loads(ZC.read_text())["nasbench101"]["cifar10"]
    assert list(scores) == list(raw) and len(scores) == 500
    names = {"flops", "params", "snip", "jacov", "grad_norm", "plain", "epe_nas", "fisher", "grasp", "l2_norm",
             "synflow", "val_accuracy"}
    assert all(set(values) == names for values in scores.values())
    assert all(scores[key][name] == float(raw[key][name]) for key in raw for name in names)
    accuracy = [values["val_accuracy"] for values in scores.values()]
    assert min(accuracy) == pytest.approx(73.38, abs=0.01) and max(accuracy) == pytest.approx(94.71, abs=0.01)
    assert next(iter(scores)).startswith("(0, 1, 1, 1, 1, 0, 1, ")


@pytest.mark.parametrize("content, expected", [
    ('{"nasbench101": {"cifar10": {}}}', "no NB101 scores for dataset 'cifar100'"),
    ('{"nasbench201": {}}', "datasets found: none"),
    ("not json", "cannot read"),
    ('{"nasbench101": {"cifar100": {"(0, 1)": {"params": 1.0}}}}', "entry (0, 1) is not a dict of scores with val_accuracy"),
    ('{"nasbench101": {"cifar100": {"(0, 1)": {"params": 1.0, "val_accuracy": "93"}}}}', "non-numeric value(s) for val_accuracy"),
])
def test_zero_cost_json_errors(tmp_path, content, expected):
    path = tmp_path / "zc.json"
    path.write_text(content)
    with pytest.raises(HnasError) as err:
        nb101.read_zc_proxies(path, dataset="cifar100")
    assert str(path) in str(err.value) and expected in str(err.value)
