"""The learning rate of each epoch: `lr_at(cfg, epoch)`, a pure function of the epoch (0-based), so a resumed
run needs no scheduler state beyond the epoch its checkpoint records.

With t = epoch (`train.lr_step=after_epoch`: HNAS steps its scheduler after each epoch) or t = epoch + 1
(`before_epoch`: the original DARTS steps it at the start of each epoch, so epoch 0 already trains at the
second value and a cosine run's last epoch at lr_min), and E = train.epochs:
- cosine: lr_min + (lr - lr_min) (1 + cos(pi t / E)) / 2 (CosineAnnealingLR(T_max=E, eta_min=lr_min));
- exp: lr * lr_gamma ** t (StepLR(step_size=1, gamma=lr_gamma));
- linear (HNAS ImageNet): lr (E - 5 - t) / (E - 5) while E - t > 5, then lr (E - t) / (5 (E - 5)): a gentler
  slope for the last 5 epochs, down to lr / (5 (E - 5)) at the last one.
Warm-up (`train.warmup_epochs` = W > 0) overrides all of these: epoch e < W trains at lr (e + 1) / W.
"""

import math

LINEAR_TAIL = 5  # HNAS's linear schedule ends with this many epochs of a smaller slope


def lr_at(cfg, epoch):
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    t = epoch + 1 if cfg.lr_step.value == "before_epoch" else epoch
    total = cfg.epochs
    kind = cfg.lr_schedule.value
    if kind == "cosine":
        return cfg.lr_min + (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t / total)) / 2
    if kind == "exp":
        return cfg.lr * cfg.lr_gamma ** t
    if total - t > LINEAR_TAIL:
        return cfg.lr * (total - LINEAR_TAIL - t) / (total - LINEAR_TAIL)
    return cfg.lr * (total - t) / ((total - LINEAR_TAIL) * LINEAR_TAIL)


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
