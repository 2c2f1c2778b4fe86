"""The one optimizer factory: an optax chain built from a config block.

    optim = OptimConfig.from_config(config.optim)          # unknown keys raise, naming the key
    tx = make_optimizer(optim, total_steps=config.train.num_steps)

Chain, in order: global-norm clipping (grad_clip > 0) → the optimizer (adamw | adam | sgd | lion) with the learning
rate schedule → optional freezing mask (leaves where `mask` is False get zero updates and no optimizer state).

Schedules (`schedule`), with linear warm-up from 0 over `warmup_steps`:
    constant   lr after the warm-up (with no warm-up the optimizer gets the float lr, no schedule state)
    cosine     cosine decay to lr · end_lr_fraction at `total_steps` (total_steps required)
    linear     linear decay to lr · end_lr_fraction at `total_steps` (total_steps required)
When `total_steps` is given, the warm-up is shortened to total_steps − 1 so that a short run still reaches lr.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import optax

OPTIMIZERS = ("adamw", "adam", "sgd", "lion")
SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """One optimizer, its learning-rate schedule and clipping. Field names are the config keys.

    lr: peak learning rate. weight_decay: decoupled (adamw, lion); must be 0 for adam and sgd.
    b1, b2, eps: Adam/Lion moments (b2, eps unused by sgd; sgd uses `momentum`). grad_clip: global-norm clip
    (0 = none). end_lr_fraction: final lr / lr for the decaying schedules.
    """

    name: str = "adamw"
    lr: float = 1e-4
    schedule: str = "constant"
    warmup_steps: int = 0
    end_lr_fraction: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0
    grad_clip: float = 0.0

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name {self.name!r} must be one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule {self.schedule!r} must be one of {SCHEDULES}")
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if int(self.warmup_steps) != self.warmup_steps or self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be an int ≥ 0, got {self.warmup_steps}")
        for key in ("weight_decay", "grad_clip", "end_lr_fraction", "momentum", "eps"):
            if getattr(self, key) < 0:
                raise ValueError(f"optim.{key} must be ≥ 0, got {getattr(self, key)}")
        if self.weight_decay and self.name in ("adam", "sgd"):
            raise ValueError(f"optim.weight_decay = {self.weight_decay} needs optim.name adamw or lion, not "
                             f"{self.name!r}")

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | Any, where: str = "optim", **overrides: Any) -> "OptimConfig":
        """From a config block (ConfigDict or dict) whose keys are a subset of the fields; `overrides` win."""
        d = dict(block.to_dict() if hasattr(block, "to_dict") else block)
        d.update(overrides)
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown {where} keys {unknown}; known: {sorted(fields)}")
        casts = {"name": str, "schedule": str, "warmup_steps": int}
        return cls(**{k: casts.get(k, float)(v) for k, v in d.items()})


def make_schedule(cfg: OptimConfig, total_steps: int | None = None) -> float | optax.Schedule:
    """The learning rate: a float (constant, no warm-up) or an optax schedule of the update count."""
    if total_steps is not None and int(total_steps) < 1:
        raise ValueError(f"total_steps must be ≥ 1, got {total_steps}")
    warmup = int(cfg.warmup_steps)
    if total_steps is not None:
        warmup = min(warmup, max(int(total_steps) - 1, 0))
    lr = float(cfg.lr)
    if cfg.schedule == "constant":
        if warmup == 0:
            return lr
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    if total_steps is None:
        raise ValueError(f"optim.schedule {cfg.schedule!r} decays over the run: pass total_steps")
    end = lr * float(cfg.end_lr_fraction)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(int(total_steps), warmup + 1), end_value=end)
    decay = optax.linear_schedule(lr, end, max(int(total_steps) - warmup, 1))
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def make_optimizer(
    cfg: OptimConfig,
    total_steps: int | None = None,
    mask: Any | Callable[[Any], Any] | None = None,
    weight_decay_mask: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """The optax chain for `cfg`.

    Args:
      cfg: the optimizer config.
      total_steps: number of updates of the run; required by the decaying schedules, shortens the warm-up.
      mask: pytree of bools (or params → pytree of bools): leaves where it is False are frozen (zero update, no
        optimizer state).
      weight_decay_mask: pytree of bools (or a function of params) selecting the leaves that are decayed.
    """
    lr = make_schedule(cfg, total_steps)
    if cfg.name == "adamw":
        opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                          mask=weight_decay_mask)
    elif cfg.name == "adam":
        opt = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.name == "lion":
        opt = optax.lion(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=weight_decay_mask)
    else:
        opt = optax.sgd(lr, momentum=cfg.momentum or None)
    tx = opt if not cfg.grad_clip else optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    if mask is None:
        return tx

    def labels(params: Any) -> Any:
        m = mask(params) if callable(mask) else mask
        return jax.tree.map(lambda keep: "train" if keep else "freeze", m)

    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimConfig", "make_optimizer", "make_schedule"]
