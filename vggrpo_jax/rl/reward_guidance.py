"""Training-free reward guidance of deterministic (ODE) sampling: steer the velocity by a differentiable reward.

Convention (rl/): x_σ = (1−σ)·x0 + σ·ε, v ≈ ε − x0, a step goes σ → σ_next < σ with x' = x + (σ_next − σ)·v, and
the clean prediction of a step is x̂0 = x − σ·v. At a guided step the velocity becomes

    ṽ = v − s·g(σ)·clip(∇_x r(x̂0(x)))

with r: (B, ...) → (B,) a reward to INCREASE, g(σ) a weight schedule (default σ/(1−σ), the paper's t/(1−t)) and
clip the per-sample global-norm clip of the gradient. The sign: x̂0 computed with ṽ is x̂0 + σ·s·g·∇r, and the step
x' = x + (σ_next − σ)·ṽ adds (σ − σ_next)·s·g·∇r to x, both moving up the reward (tests/test_reward_guidance.py
checks it numerically on an analytic reward and on the LGM).

`through_model` decides what ∇_x means: True differentiates r(x − σ·v(x)) through the network (the exact gradient
of the issue's formula, one network backward per guided step); False treats v as a constant, so ∇_x r = ∇_{x̂0} r
(no network backward: the reward model's backward only).

Model-agnostic like the rest of rl/: the network is a `VelocityFn` (CFG batch, see rollout.py) and the reward any
function of the predicted clean latents. Rows must be independent in both (no batch statistics), so the gradient of
Σ_b r_b is each sample's own gradient.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vggrpo_jax.rl.rollout import VelocityFn, _schedule, cfg_text, guided_velocity
from vggrpo_jax.rl.sde import ode_step

RewardFn = Callable[[jax.Array], jax.Array]  # x̂0 (B, ...) float32 -> (B,) reward to increase

SCHEDULES = ("ratio", "constant", "sigma", "one_minus_sigma")


def schedule_weight(schedule: str, sigma: jax.Array) -> jax.Array:
    """g(σ) in float32: "ratio" σ/(1−σ) (the paper's t/(1−t); large at noisy steps, 0 at σ = 0), "constant" 1,
    "sigma" σ, "one_minus_sigma" 1 − σ."""
    sigma = jnp.asarray(sigma, jnp.float32)
    if schedule == "ratio":
        return sigma / (1.0 - sigma)
    if schedule == "constant":
        return jnp.ones_like(sigma)
    if schedule == "sigma":
        return sigma
    if schedule == "one_minus_sigma":
        return 1.0 - sigma
    raise ValueError(f"guidance schedule {schedule!r} is not one of {SCHEDULES}")


def parse_steps(spec: str, num_steps: int | None, key: str = "guidance.steps") -> tuple[int, ...]:
    """The guided step indices (sorted, unique) of a spec for a schedule of `num_steps` steps.

    spec: "all"; a comma list of indices "0,5,10"; or a Python slice "start:stop[:step]" ("::2" every other step,
    "10:" from step 10 on, "-5:" the last five). Indices count from 0 (the noisiest step). With num_steps None only
    the syntax is checked (returns ()). Errors name `key`.
    """
    s = str(spec).strip()
    explain = ("give 'all', a comma list of step indices ('0,5,10') or a slice 'start:stop[:step]' with a positive "
               "step ('::2', '10:')")
    try:
        if s == "all":
            parsed: Any = slice(None)
        elif ":" in s:
            parts = [p.strip() for p in s.split(":")]
            if len(parts) > 3:
                raise ValueError
            start, stop, step = (int(p) if p else None for p in parts + [""] * (3 - len(parts)))
            if step is not None and step <= 0:
                raise ValueError
            parsed = slice(start, stop, step)
        else:
            parsed = sorted({int(p) for p in s.split(",")})
            if parsed[0] < 0:
                raise ValueError
    except ValueError:
        raise ValueError(f"config.{key}={spec!r}: {explain}") from None
    if num_steps is None:
        return ()
    if isinstance(parsed, slice):
        steps = tuple(range(num_steps)[parsed])
    else:
        bad = [i for i in parsed if i >= num_steps]
        if bad:
            raise ValueError(f"config.{key}={spec!r}: steps {bad} lie outside 0..{num_steps - 1} ({num_steps} steps)")
        steps = tuple(parsed)
    if not steps:
        raise ValueError(f"config.{key}={spec!r} selects no step of {num_steps}")
    return steps


@dataclasses.dataclass(frozen=True)
class GuidanceOptions:
    """Static options of reward guidance (hashable: a static argument of jit). The scale is NOT here: it is a traced
    argument of the sampler, so one compiled program serves every scale.

    steps:         guided step indices (see parse_steps); other steps are plain ODE steps.
    schedule:      g(σ), one of SCHEDULES.
    clip:          per-sample global-norm clip of ∇r before scaling (0: no clipping).
    through_model: differentiate x̂0 = x − σ·v(x) through the network (True) or hold v fixed (False).
    """

    steps: tuple[int, ...]
    schedule: str = "ratio"
    clip: float = 1.0
    through_model: bool = True

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"GuidanceOptions.schedule {self.schedule!r} is not one of {SCHEDULES}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise ValueError(f"GuidanceOptions.clip must be a finite float ≥ 0, got {self.clip!r}")
        if not all(isinstance(i, (int, np.integer)) and i >= 0 for i in self.steps):
            raise ValueError(f"GuidanceOptions.steps must be non-negative ints, got {self.steps!r}")


@flax.struct.dataclass
class GuidanceTrace:
    """What guidance did at each step, (T, B) float32 each (NaN / 0 at unguided steps):

    reward:    r(x̂0) of the UNGUIDED prediction x̂0 = x − σ·v at the step (NaN where not guided).
    grad_norm: ‖∇r‖ per sample before clipping (0 where not guided or not finite).
    skipped:   1 where the reward or its gradient was not finite, so that sample's step was not corrected.
    """

    reward: jax.Array
    grad_norm: jax.Array
    skipped: jax.Array


def reward_gradient(
    velocity: Callable[[jax.Array], jax.Array], reward_fn: RewardFn, x: jax.Array, sigma: jax.Array,
    through_model: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(v (B, ...), r(x̂0) (B,), ∇_x r(x̂0(x)) (B, ...)) with x̂0 = x − σ·v(x), all float32.

    Non-finite rewards contribute nothing to the summed objective (their rows' gradients are then zero or NaN and are
    masked by the caller).
    """

    def objective(x_):
        v = velocity(x_)
        v_used = v if through_model else jax.lax.stop_gradient(v)
        r = reward_fn(x_ - sigma * v_used).astype(jnp.float32)
        if r.shape != x_.shape[:1]:
            raise ValueError(f"reward_fn must return one reward per sample {x_.shape[:1]}, got {r.shape}")
        return jnp.sum(jnp.where(jnp.isfinite(r), r, 0.0)), (v, r)

    grad, (v, r) = jax.grad(objective, has_aux=True)(x.astype(jnp.float32))
    return v, r, grad


def clip_per_sample(grad: jax.Array, reward: jax.Array, clip: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(clipped gradient, pre-clip norm (B,), skipped (B,) float) with non-finite rows zeroed and marked skipped."""
    flat = grad.reshape(grad.shape[0], -1)
    ok = jnp.isfinite(reward) & jnp.all(jnp.isfinite(flat), axis=1)
    flat = jnp.where(ok[:, None], flat, 0.0)
    norm = jnp.sqrt(jnp.sum(flat * flat, axis=1))
    if clip > 0:
        flat = flat * jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-30))[:, None]
    return flat.reshape(grad.shape), norm, (~ok).astype(jnp.float32)


def reward_guided_ode_sample(
    velocity_fn: VelocityFn,
    reward_fn: RewardFn,
    x_init: jax.Array,
    sigmas: Any,
    scale: float | jax.Array,
    options: GuidanceOptions,
    *,
    cond: Any,
    uncond: Any | None = None,
    cfg_scale: float | jax.Array = 1.0,
) -> tuple[jax.Array, GuidanceTrace]:
    """Euler ODE sampling (as rollout.ode_sample) with reward guidance at `options.steps`: ((B, ...) z0, trace).

    scale: s ≥ 0 (may be traced). A step is guided only where it is in options.steps AND s ≠ 0 (a lax.cond), so
    s = 0 runs exactly the unguided program's arithmetic and returns ode_sample's z0 bit for bit.
    """
    s_arr, t_all = _schedule(sigmas)
    num_steps = s_arr.shape[0] - 1
    bad = [i for i in options.steps if i >= num_steps]
    if bad:
        raise ValueError(f"guidance steps {bad} lie outside the {num_steps}-step schedule")
    b = x_init.shape[0]
    text2 = None if uncond is None else cfg_text(cond, uncond, b)
    mask = np.zeros((num_steps,), bool)
    mask[list(options.steps)] = True
    scale = jnp.asarray(scale, jnp.float32)

    def body(x, inp):
        sigma, sigma_next, t, guided = inp
        tb = jnp.full((b,), t, jnp.int32)
        velocity = lambda x_: guided_velocity(velocity_fn, x_, tb, cond, uncond, cfg_scale, text2)  # noqa: E731

        def plain(x_):
            v = velocity(x_)
            nan = jnp.full((b,), jnp.nan, jnp.float32)
            return ode_step(x_, v, sigma, sigma_next), (nan, jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.float32))

        def steered(x_):
            v, r, grad = reward_gradient(velocity, reward_fn, x_, sigma, options.through_model)
            grad, norm, skipped = clip_per_sample(grad, r, options.clip)
            v_tilde = v - scale * schedule_weight(options.schedule, sigma) * grad
            return ode_step(x_, v_tilde, sigma, sigma_next), (r, norm, skipped)

        x_next, trace = jax.lax.cond(guided & (scale != 0), steered, plain, x)
        return x_next, trace

    z0, (r, norm, skipped) = jax.lax.scan(
        body, x_init.astype(jnp.float32), (s_arr[:-1], s_arr[1:], t_all, jnp.asarray(mask)))
    return z0, GuidanceTrace(reward=r, grad_norm=norm, skipped=skipped)
