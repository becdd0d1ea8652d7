"""Training-free metrics of any PyTorch classifier, computed with shared passes.

    from hnas.metrics import compute_metrics, list_metrics
    values = compute_metrics(model, inputs, targets, ["snip", "grasp", "ntk_trace", "condnum"])

Adding a metric is one decorated function (see `hnas.metrics.engine` and docs/metrics.md)::

    @register_metric("my_metric", needs=("loss_grads",))
    def my_metric(ctx):
        return sum(float(g.abs().sum()) for g in ctx.loss_grads.grads if g is not None)
"""

# Importing these registers the shared quantities; the engine computes them in this order (each pass once):
# forward; loss_grads, fisher_stats, hvp; theta, theta_eigvals; input_jacobian; relu_kernel, macs;
# synflow; meco_terms; half_batch_grads; az_scores; swap_patterns; zen; vkdnw; linear_regions.
from hnas.metrics import forward_pass as _forward_pass  # noqa: F401
from hnas.metrics import loss_grads as _loss_grads  # noqa: F401
from hnas.metrics import theta as _theta  # noqa: F401
from hnas.metrics import input_jacobian as _input_jacobian  # noqa: F401
from hnas.metrics import recorded as _recorded  # noqa: F401
from hnas.metrics import synflow as _synflow  # noqa: F401
from hnas.metrics import meco as _meco  # noqa: F401
from hnas.metrics import zico as _zico  # noqa: F401
from hnas.metrics import az_nas as _az_nas  # noqa: F401
from hnas.metrics import swap as _swap  # noqa: F401
from hnas.metrics import zen as _zen  # noqa: F401
from hnas.metrics import vkdnw as _vkdnw  # noqa: F401
from hnas.metrics import linear_regions as _linear_regions  # noqa: F401
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
