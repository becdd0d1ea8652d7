"""The NAS-Bench-201 benchmark: the compact table, the official-file readers and the converter."""

import csv
import io
import random

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import benchmark_text, needs_data
from hnas.benchmarks import nb201
from hnas.benchmarks.nb201 import convert
from hnas.errors import HnasError
from hnas.spaces import nb201 as space

FIXTURE_INDICES = (0, 11, 284)
# Every (dataset, split, epochs) the table offers, and the column it must come from (the documented schema).
ACCURACIES = {
    ("cifar10-valid", "valid", 12): "cifar10_valid_acc_12ep",
    ("cifar100", "valid", 12): "cifar100_valid_acc_12ep",
    ("ImageNet16-120", "valid", 12): "imagenet16_valid_acc_12ep",
    ("cifar10-valid", "valid", 200): "cifar10_valid_acc_200ep",
    ("cifar10", "test", 200): "cifar10_test_acc_200ep",
    ("cifar100", "test", 200): "cifar100_test_acc_200ep",
    ("ImageNet16-120", "test", 200): "imagenet16_test_acc_200ep",
}
TIMES = {("cifar10-valid", 12): "cifar10_valid_time_12ep", ("cifar10-valid", 200): "cifar10_valid_time_200ep"}
# Rows whose params_m is a whole number of parameters and still not the network's count (found by the test below).
PARAMS_WRONG_BUT_INTEGER = {737, 5065, 6545, 11964, 15372}


@pytest.fixture(scope="module")
def table():
    return nb201.load_table()


@pytest.fixture(scope="module")
def csv_rows():
    """The real table parsed independently of the code under test."""
    return list(csv.DictReader(io.StringIO(benchmark_text())))


@pytest.fixture
def nats_dir(data_dir):
    return data_dir / "nats-bench-fixture" / "NATS-tss-v1_0-3ffb9-simple"


def assert_same_printed_digits(value, text):
    """`value` equals the CSV's `text` to every digit printed there."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(value - float(text)) <= 0.5 * 10**-decimals + 1e-9, (value, text)


# ----------------------------------------------------------------------------------------------------------
# The real table


def test_real_table_shape_and_order(table, csv_rows):
    assert len(table) == space.NUM_ARCHS == len(csv_rows)
    assert table.archs == [row["arch"] for row in csv_rows]
    assert list(table.indices) == list(range(space.NUM_ARCHS))
    assert not table.partial


def test_lookups_match_independently_parsed_csv(table, csv_rows):
    for row in random.Random(0).sample(csv_rows, 25):
        index = int(row["index"])
        assert table.index_of(row["arch"]) == index
        for (dataset, split, epochs), col in ACCURACIES.items():
            assert table.accuracy(row["arch"], dataset, split, epochs) == float(row[col])
            assert table.accuracy(index, dataset, split, epochs) == float(row[col])
        for (dataset, epochs), col in TIMES.items():
            assert table.train_time(index, dataset, epochs) == float(row[col])


def test_columns_are_in_index_order(table, csv_rows):
    for (dataset, split, epochs), col in ACCURACIES.items():
        np.testing.assert_array_equal(table.column(dataset, split, epochs), [float(r[col]) for r in csv_rows])
    for (dataset, epochs), col in TIMES.items():
        np.testing.assert_array_equal(table.time_column(dataset, epochs), [float(r[col]) for r in csv_rows])


def test_dataset_spellings_and_epoch_strings(table):
    assert table.accuracy(5, "imagenet16_120", "test", "200") == table.accuracy(5, "ImageNet16-120", "test", 200)
    assert table.accuracy(5, "cifar10_valid", "valid", 12) == table.accuracy(5, "cifar10-valid", "valid", 12)


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda t: t.accuracy(0, "cifar10", "valid", 12), "Available (dataset, split, epochs)"),
        (lambda t: t.accuracy(0, "cifar10-valid", "test", 200), "(cifar10-valid, valid, 200)"),
        (lambda t: t.accuracy(0, "svhn", "test", 200), "unknown NB201 dataset"),
        (lambda t: t.accuracy(0, "cifar10", "test", 90), "12 or 200"),
        (lambda t: t.train_time(0, "cifar100", 200), "Available (dataset, epochs)"),
        (lambda t: t.accuracy(15625, "cifar10", "test", 200), "not in the table"),
        (lambda t: t.index_of("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"), "expected the form"),
        (lambda t: t.accuracy(1.5, "cifar10", "test", 200), "arch string or index"),
    ],
)
def test_bad_lookups_explain_themselves(table, call, expected):
    with pytest.raises(HnasError, match=None) as err:
        call(table)
    assert expected.lower() in str(err.value).lower()


def test_space_index_mapping_round_trips(table):
    for index, arch in enumerate(table.archs):
        assert table.index_of(arch) == index
    for arch in space.NB201Space().sample_distinct(200, seed=1):
        assert table.archs[table.index_of(arch)] == arch
    assert sorted(table.archs) == sorted(space.all_archs())


def test_params_column_is_exact_except_documented_rows(table):
    """The params_m claim, checked: which rows differ from the official network's exact count."""
    counted = np.array([nb201.compact_params(arch) for arch in table.archs])
    scaled = table.frame["params_m"].to_numpy() * 1e6
    whole = np.abs(scaled - np.round(scaled)) < 1e-6
    wrong = ~np.isclose(scaled, counted, rtol=0, atol=1e-3)
    assert wrong.sum() == 204
    # 199 of the 204 are not whole numbers (means over seeds); the other 5 are whole numbers but wrong.
    assert (~whole).sum() == 199
    assert set(np.flatnonzero(wrong)) == set(np.flatnonzero(~whole)) | PARAMS_WRONG_BUT_INTEGER


def test_compact_network_parameter_counts_match_table(table):
    scaled = table.frame["params_m"].to_numpy() * 1e6
    exact = [
        i for i in range(len(table)) if abs(scaled[i] - round(scaled[i])) < 1e-6 and i not in PARAMS_WRONG_BUT_INTEGER
    ]
    assert len(exact) == 15_421
    for index in random.Random(0).sample(exact, 50):
        net = space.build(table.archs[index], 10, "compact")
        assert sum(p.numel() for p in net.parameters()) == round(scaled[index]), table.archs[index]


def test_table_is_cached(table):
    assert nb201.load_table() is table


# ----------------------------------------------------------------------------------------------------------
# Official NATS-Bench files


@needs_data
def test_nats_fixture_matches_table(nats_dir, csv_rows):
    frame = nb201.read_nats(nats_dir)
    assert list(frame["index"]) == list(FIXTURE_INDICES)
    for _, official in frame.iterrows():
        row = csv_rows[official["index"]]
        assert official["arch"] == row["arch"]
        for col in nb201.VALUE_COLUMNS:  # the fixture holds every column, so all are compared
            assert_same_printed_digits(official[col], row[col])


@needs_data
def test_nats_reader_uses_the_documented_queries(nats_dir):
    """Spot-check the query behind each column against the official API called directly."""
    from nats_bench import create

    api = create(str(nats_dir), "tss", fast_mode=True, verbose=False)
    frame = nb201.read_nats(nats_dir, [284]).iloc[0]
    info = api.get_more_info(284, "cifar10-valid", hp="12", is_random=False)
    assert frame["cifar10_valid_acc_12ep"] == info["valid-accuracy"]
    assert frame["cifar10_valid_time_12ep"] == info["train-all-time"]
    assert frame["cifar10_test_acc_200ep"] == api.get_more_info(284, "cifar10", hp="200", is_random=False)["test-accuracy"]


@needs_data
def test_convert_nats_round_trip(nats_dir, tmp_path, table, capsys):
    out = tmp_path / "part.csv"
    assert convert.main(["--nats", str(nats_dir), "--out", str(out)]) == 0
    assert "partial table" in capsys.readouterr().out
    part = nb201.load_table(out, partial=True)
    assert list(part.indices) == list(FIXTURE_INDICES) and part.partial
    for index in FIXTURE_INDICES:
        assert part.index_of(table.archs[index]) == index
        for dataset, split, epochs in ACCURACIES:
            expected = table.accuracy(index, dataset, split, epochs)
            assert part.accuracy(index, dataset, split, epochs) == pytest.approx(expected, abs=1e-5)
        for dataset, epochs in TIMES:
            assert part.train_time(index, dataset, epochs) == pytest.approx(table.train_time(index, dataset, epochs), abs=1e-5)
    # A partial table is refused unless asked for, and lookups outside it say so.
    with pytest.raises(HnasError, match="partial=True"):
        nb201.load_table(out)
    with pytest.raises(HnasError, match="not in the table"):
        part.accuracy(1, "cifar10", "test", 200)
    with pytest.raises(HnasError, match="not in the NB201 table"):
        part.index_of(table.archs[1])


@needs_data
def test_convert_selected_indices_and_missing_ones(nats_dir, tmp_path, capsys):
    out = tmp_path / "two.csv"
    assert convert.main(["--nats", str(nats_dir), "--indices", "284,0", "--out", str(out)]) == 0
    assert list(nb201.load_table(out, partial=True).indices) == [0, 284]
    assert convert.main(["--nats", str(nats_dir), "--indices", "1", "--out", str(tmp_path / "x.csv")]) == 1
    assert "no results for architecture 1" in capsys.readouterr().err


def test_convert_reports_missing_and_wrong_sources(tmp_path, capsys):
    assert convert.main(["--nats", str(tmp_path / "absent"), "--out", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "absent") in err and "NATS-Bench" in err
    assert convert.main(["--nats", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 1
    assert "cannot read" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Official NAS-Bench-201 .pth files


def _trial(arch, dataset, seed, epochs, train_time, evals, params):
    from nas_201_api import ResultsCount

    config = {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": 10}
    accs, losses = {e: 50.0 for e in range(epochs)}, {e: 1.0 for e in range(epochs)}
    result = ResultsCount(dataset, None, accs, losses, params, 10.0, config, seed, epochs, [0.01])
    result.update_train_info(accs, None, losses, {e: train_time / epochs for e in range(epochs)})
    eval_accs = {f"{name}@{e}": acc for name, acc in evals.items() for e in range(epochs)}
    result.update_eval(eval_accs, {k: 1.0 for k in eval_accs}, {k: 0.1 for k in eval_accs})
    return result


def _arch_results(index, arch, trials):
    from nas_201_api import ArchResults

    results = ArchResults(index, arch)
    for dataset, seed, result in trials:
        results.update(dataset, seed, result)
    return results.state_dict()


def write_nb201_pth(path, table, indices, less_cifar100=True, params=0.1):
    """A small file in the official NAS-Bench-201 layout, holding `table`'s values for `indices`."""
    arch2infos = {}
    for i in indices:
        arch = table.archs[i]
        acc = lambda d, s, e: table.accuracy(i, d, s, e)  # noqa: E731
        t12, t200 = table.train_time(i, "cifar10-valid", 12), table.train_time(i, "cifar10-valid", 200)
        v12 = acc("cifar10-valid", "valid", 12)
        less = [  # 12 epochs: cifar10-valid twice (seeds 777, 888; their mean is the table's value)
            ("cifar10-valid", 777, _trial(arch, "cifar10-valid", 777, 12, t12, {"x-valid": v12 - 0.5, "ori-test": 60.0}, params)),
            ("cifar10-valid", 888, _trial(arch, "cifar10-valid", 888, 12, t12, {"x-valid": v12 + 0.5, "ori-test": 60.0}, params)),
            ("ImageNet16-120", 777, _trial(arch, "ImageNet16-120", 777, 12, 500.0, {"x-valid": acc("ImageNet16-120", "valid", 12), "x-test": 1.0}, params)),
        ]
        if less_cifar100:
            less.append(("cifar100", 777, _trial(arch, "cifar100", 777, 12, 200.0, {"x-valid": acc("cifar100", "valid", 12), "x-test": 1.0}, params)))
        full = [
            ("cifar10-valid", 777, _trial(arch, "cifar10-valid", 777, 200, t200, {"x-valid": acc("cifar10-valid", "valid", 200), "ori-test": 80.0}, params)),
            ("cifar10", 777, _trial(arch, "cifar10", 777, 200, 3000.0, {"ori-test": acc("cifar10", "test", 200)}, params)),
            ("cifar100", 777, _trial(arch, "cifar100", 777, 200, 3000.0, {"x-valid": 1.0, "x-test": acc("cifar100", "test", 200)}, params)),
            ("ImageNet16-120", 777, _trial(arch, "ImageNet16-120", 777, 200, 9000.0, {"x-valid": 1.0, "x-test": acc("ImageNet16-120", "test", 200)}, params)),
        ]
        arch2infos[i] = {"less": _arch_results(i, arch, less), "full": _arch_results(i, arch, full)}
    data = {"meta_archs": list(table.archs), "arch2infos": arch2infos, "evaluated_indexes": list(indices)}
    torch.save(data, path)
    return path


def test_nb201_pth_reader_and_converter(tmp_path, table):
    pth = write_nb201_pth(tmp_path / "NAS-Bench-201-mini.pth", table, FIXTURE_INDICES)
    frame = nb201.read_nb201_pth(pth)
    assert list(frame["index"]) == list(FIXTURE_INDICES)
    for _, row in frame.iterrows():
        i = row["index"]
        assert row["arch"] == table.archs[i]
        for (dataset, split, epochs), col in ACCURACIES.items():
            assert row[col] == pytest.approx(table.accuracy(i, dataset, split, epochs), abs=1e-9)
        for (dataset, epochs), col in TIMES.items():
            assert row[col] == pytest.approx(table.train_time(i, dataset, epochs), rel=1e-12)
        # params_m is the exact count of the official network, not the file's (here deliberately wrong) value.
        assert row["params_m"] == table.frame["params_m"][i]

    out = tmp_path / "from-pth.csv"
    assert convert.main(["--nb201-pth", str(pth), "--out", str(out), "--indices", "11"]) == 0
    part = nb201.load_table(out, partial=True)
    assert part.accuracy(11, "cifar10-valid", "valid", 12) == pytest.approx(table.accuracy(11, "cifar10-valid", "valid", 12))


def test_nb201_pth_missing_results_become_empty_cells(tmp_path, table):
    """Like NB201 v1.0, which has no 12-epoch CIFAR-100 run: the value is absent, and asking for it says so."""
    pth = write_nb201_pth(tmp_path / "v1_0-like.pth", table, [0], less_cifar100=False)
    out = tmp_path / "t.csv"
    assert convert.main(["--nb201-pth", str(pth), "--out", str(out)]) == 0
    assert ",," in out.read_text().splitlines()[1]
    part = nb201.load_table(out, partial=True)
    assert np.isnan(part.column("cifar100", "valid", 12)[0])
    with pytest.raises(HnasError, match="no cifar100 valid accuracy"):
        part.accuracy(0, "cifar100", "valid", 12)
    assert part.accuracy(0, "cifar100", "test", 200) == pytest.approx(table.accuracy(0, "cifar100", "test", 200))


def test_nb201_pth_with_python_objects_needs_trust(tmp_path, table):
    pth = write_nb201_pth(tmp_path / "np.pth", table, [0], params=np.float64(0.1))  # numpy: not plain data
    with pytest.raises(HnasError, match="trust-pickle"):
        nb201.read_nb201_pth(pth)
    assert list(nb201.read_nb201_pth(pth, trust_pickle=True)["index"]) == [0]


def test_nb201_pth_wrong_file(tmp_path):
    bogus = tmp_path / "bogus.pth"
    torch.save({"not": "a benchmark"}, bogus)
    with pytest.raises(HnasError, match="cannot read .*bogus.pth"):
        nb201.read_nb201_pth(bogus)
    with pytest.raises(HnasError, match="absent.pth"):
        nb201.read_nb201_pth(tmp_path / "absent.pth")


# ----------------------------------------------------------------------------------------------------------
# Missing and malformed tables


def test_missing_table_names_file_and_remedy(tmp_path):
    with pytest.raises(HnasError) as err:
        nb201.load_table(tmp_path / "nb201.csv")
    message = str(err.value)
    assert str(tmp_path / "nb201.csv") in message and "hnas-nb201-convert" in message


@pytest.fixture(scope="module")
def real_frame():
    return pd.read_csv(io.StringIO(benchmark_text()), dtype=str, keep_default_na=False)


def _mutations():
    def drop_column(f):
        return f.drop(columns=["params_m"])

    def bad_arch(f):
        f.loc[3, "arch"] = "|nor_conv_3x3~0|+|nor_conv_3x3~0|"
        return f

    def text_value(f):
        f.loc[5, "cifar10_test_acc_200ep"] = "n/a"
        return f

    def fraction_not_percent(f):
        f.loc[5, "cifar10_test_acc_200ep"] = "120"
        return f

    def negative_time(f):
        f.loc[5, "cifar10_valid_time_12ep"] = "-3"
        return f

    def non_integer_index(f):
        f.loc[2, "index"] = "2.5"
        return f

    def duplicate_arch(f):
        f.loc[4, "arch"] = f.loc[3, "arch"]
        return f

    return {
        "drop_column": (drop_column, "missing column(s) params_m"),
        "bad_arch": (bad_arch, "row 4 (index 3)"),
        "text_value": (text_value, "'n/a' is not a number"),
        "fraction_not_percent": (fraction_not_percent, "must lie in 0..100"),
        "negative_time": (negative_time, "must be positive"),
        "non_integer_index": (non_integer_index, "not an integer"),
        "duplicate_arch": (duplicate_arch, "more than one row"),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_malformed_table_names_file_and_problem(real_frame, tmp_path, name):
    mutate, expected = _mutations()[name]
    path = tmp_path / f"{name}.csv"
    mutate(real_frame.head(20).copy()).to_csv(path, index=False)
    with pytest.raises(HnasError) as err:
        nb201.load_table(path, partial=True)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_full_table_needs_every_row_in_order(real_frame, tmp_path):
    short = tmp_path / "short.csv"
    real_frame.head(100).to_csv(short, index=False)
    with pytest.raises(HnasError, match="100 rows, expected 15625"):
        nb201.load_table(short)
    shuffled = tmp_path / "shuffled.csv"
    frame = real_frame.copy()
    frame.loc[[7, 8]] = frame.loc[[8, 7]].to_numpy()
    frame.to_csv(shuffled, index=False)
    with pytest.raises(HnasError, match="row 8 has index 8, expected 7"):
        nb201.load_table(shuffled)
    with pytest.raises(HnasError, match="strictly increasing"):
        nb201.load_table(shuffled, partial=True)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(HnasError, match="not a readable CSV"):
        nb201.load_table(empty)


def test_rewritten_file_is_reread(real_frame, tmp_path):
    path = tmp_path / "t.csv"
    real_frame.head(3).to_csv(path, index=False)
    assert len(nb201.load_table(path, partial=True)) == 3
    real_frame.head(5).to_csv(path, index=False)
    assert len(nb201.load_table(path, partial=True)) == 5
