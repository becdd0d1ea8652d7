"""Training-free metrics of any PyTorch classifier, computed with shared passes.

    from hnas.metrics import compute_metrics, list_metrics
    values = compute_metrics(model, inputs, targets, ["snip", "grasp", "ntk_trace", "condnum"])

Adding a metric is one decorated function (see `hnas.metrics.engine` and docs/metrics.md)::

    @register_metric("my_metric", needs=("loss_grads",))
    def my_metric(ctx):
        return sum(float(g.abs().sum()) for g in ctx.loss_grads.grads if g is not None)
"""

from hnas.metrics import quantities as _quantities  # noqa: F401  (registers the shared quantities)
from hnas.metrics import definitions as _definitions  # noqa: F401  (registers the metrics)
from hnas.metrics.engine import (
    METRICS,
    QUANTITIES,
    Context,
    compute_metrics,
    list_metrics,
    plan_for,
    register_metric,
    register_quantity,
)

__all__ = [
    "METRICS",
    "QUANTITIES",
    "Context",
    "compute_metrics",
    "list_metrics",
    "plan_for",
    "register_metric",
    "register_quantity",
]
