"""The oracle every search algorithm queries, and the query log that enforces limits and keeps the record.

One query = the validation accuracy of an architecture after a short training (12 epochs on cifar10-valid
for NB201) at the cost of that training's time. Test accuracies (200 epochs) are only read to report the
result and the best-so-far curve; no algorithm sees them.
"""

import math

import numpy as np

# Datasets whose 200-epoch test accuracy a result reports, and their short column keys.
TEST_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
TEST_KEYS = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16"}
TEST_EPOCHS = 200


def test_column(dataset):
    """Column name of a 200-epoch test accuracy, e.g. `cifar10_test_acc_200ep`."""
    return f"{TEST_KEYS[dataset]}_test_acc_{TEST_EPOCHS}ep"


class BenchmarkOracle:
    """Validation accuracy, training cost and test accuracies of architectures, read from a benchmark table.

    `table` follows hnas.benchmarks.nb201.NB201Table: `archs`, `index_of`, `accuracy`, `train_time`.
    """

    def __init__(self, table, dataset="cifar10-valid", epochs=12):
        self.table = table
        self.dataset = dataset
        self.epochs = int(epochs)

    @property
    def archs(self):
        return self.table.archs

    def index(self, arch):
        return int(self.table.index_of(arch))

    def val_acc(self, arch):
        return float(self.table.accuracy(arch, self.dataset, "valid", self.epochs))

    def cost(self, arch):
        return float(self.table.train_time(arch, self.dataset, self.epochs))

    def test_accs(self, arch):
        return {ds: float(self.table.accuracy(arch, ds, "test", TEST_EPOCHS)) for ds in TEST_DATASETS}

    def optimum(self):
        """The best 200-epoch test accuracy of the whole table, per dataset."""
        n = len(self.archs)
        return {ds: max(float(self.table.accuracy(i, ds, "test", TEST_EPOCHS)) for i in range(n))
                for ds in TEST_DATASETS}


class SearchStopped(Exception):
    """Raised by QueryLog.query when the next query would break the query limit or the cost budget."""


class QueryLog:
    """Every query of one search, in order, with the limits (`queries`, `budget_s`) enforced.

    Algorithms call `query(arch, **info)`: it raises SearchStopped instead of querying when the limit of
    queries is reached or the query's cost would push the summed cost past `budget_s`. Every query is charged,
    also a repeated one (an algorithm that re-proposes an architecture would retrain it). `listeners` are
    called with each new record (the stage's TensorBoard writer and logger).
    """

    def __init__(self, oracle, queries=None, budget_s=None, listeners=()):
        self.oracle = oracle
        self.max_queries = None if queries is None else int(queries)
        self.budget_s = None if budget_s is None else float(budget_s)
        self.listeners = list(listeners)
        self.records = []
        self.cost = 0.0
        self.stop_reason = None
        self._best = None  # index into records of the best validation accuracy so far (first on ties)

    @property
    def exhausted(self):
        """True once the query limit is reached (budget exhaustion shows only when a query is attempted)."""
        full = self.max_queries is not None and len(self.records) >= self.max_queries
        return self.stop_reason is not None or full

    @property
    def best(self):
        return None if self._best is None else self.records[self._best]

    @property
    def queried(self):
        return {r["arch"] for r in self.records}

    def stop(self, reason):
        if self.stop_reason is None:
            self.stop_reason = reason
        raise SearchStopped(reason)

    def query(self, arch, t=math.nan, c=math.nan, score=math.nan):
        """Query `arch`'s validation accuracy (charging its cost); `t`, `c`, `score` are logged with it."""
        if self.max_queries is not None and len(self.records) >= self.max_queries:
            self.stop(f"reached {self.max_queries} queries")
        cost = self.oracle.cost(arch)
        if self.budget_s is not None and self.cost + cost > self.budget_s:
            self.stop(f"the next query ({cost:.1f} s) would exceed the budget of {self.budget_s:.1f} s "
                      f"(spent {self.cost:.1f} s)")
        val = self.oracle.val_acc(arch)
        self.cost += cost
        if self._best is None or val > self.records[self._best]["val_acc"]:
            self._best = len(self.records)
        best_arch = arch if self._best == len(self.records) else self.records[self._best]["arch"]
        best_val = val if self._best == len(self.records) else self.records[self._best]["val_acc"]
        record = {
            "step": len(self.records) + 1,
            "arch": arch,
            "index": self.oracle.index(arch),
            "t": float(t),
            "c": float(c),
            "score": float(score),
            "val_acc": val,
            "cost_s": cost,
            "cum_cost_s": self.cost,
            "best_arch": best_arch,
            "best_index": self.oracle.index(best_arch),
            "best_val_acc": best_val,
        }
        tests = self.oracle.test_accs(best_arch)
        record.update({f"best_{test_column(ds)}": tests[ds] for ds in TEST_DATASETS})
        self.records.append(record)
        for listener in self.listeners:
            listener(record)
        return val


def finite_or_inf(values):
    """Scores as a float array with NaN / -inf / +inf replaced by +inf, so argmin never picks them."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), values, np.inf)
