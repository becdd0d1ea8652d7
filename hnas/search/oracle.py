"""The query log: every query of one search, with the limits enforced and the record kept.

The oracles themselves are in hnas.oracles.
"""

import math


class SearchStopped(Exception):
    """Raised by QueryLog.query when the next query would break the query limit or the cost budget."""


class QueryLog:
    """Every query of one search, in order, with the limits (`queries`, `budget_s`) enforced.

    Algorithms call `query(arch, **info)`: it raises SearchStopped instead of querying when the limit of
    queries is reached, or when the budget `budget_s` rules the query out. The budget rule: an oracle that
    knows a query's cost in advance (`cost_in_advance`: a benchmark table) is not asked a query whose cost
    would push the summed cost past the budget; an oracle that learns the cost only by answering (training)
    is asked while the summed cost is below the budget, and the query that crosses it counts, since it was
    paid for. Every query is charged, also a repeated one (an algorithm that re-proposes an architecture
    would retrain it). `listeners` are called with each new record (the stage's TensorBoard writer and
    logger).
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
        if self.budget_s is not None:
            known = getattr(self.oracle, "cost_in_advance", None)
            if known is not None and self.cost + known(arch) > self.budget_s:
                self.stop(f"the next query ({known(arch):.1f} s) would exceed the budget of "
                          f"{self.budget_s:.1f} s (spent {self.cost:.1f} s)")
            elif known is None and self.cost >= self.budget_s:
                self.stop(f"spent the budget of {self.budget_s:.1f} s ({self.cost:.1f} s)")
        outcome = self.oracle.query(arch)
        val, cost = outcome.val_acc, outcome.cost_s
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
        record.update({f"best_{column}": tests[ds] for ds, column in self.oracle.test_columns.items()})
        self.records.append(record)
        for listener in self.listeners:
            listener(record)
        return val
