"""Sampling trajectories with log-probabilities (GRPO rollouts) and deterministic ODE sampling (evaluation).

Model-agnostic: the network enters as a `VelocityFn`

    velocity_fn(x (2B, ...), t (2B,) int32, text) -> v (2B, ...)

called ONCE per step on the classifier-free-guidance batch, where row 2b is sample b with its prompt (`cond`) and
row 2b+1 the same sample with the negative prompt (`uncond`). Interleaving (rather than [cond; uncond] halves) keeps
each sample's two rows on the device that holds the sample when the batch is sharded, so the CFG split needs no
communication. `text` is any pytree whose leaves have a leading batch dim (embeddings, masks, lengths, ...). The
guided velocity is v = v_u + w·(v_c − v_u), in float32.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vggrpo_jax.rl.schedule import check_sigmas, timesteps as _timesteps
from vggrpo_jax.rl.sde import NoiseRule, log_prob, ode_step, sde_step_mean_std

VelocityFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


@flax.struct.dataclass
class Trajectory:
    """One rollout of T steps for B samples (a pytree; all arrays, time-major).

    latents:     (T+1, B, ...) float32, latents[0] = initial noise, latents[i+1] = result of step i, latents[T] = z0.
    log_probs:   (T, B) float32, log p(latents[i+1] | latents[i]) under the sampling policy for SDE steps; 0 for ODE
                 steps.
    sigmas:      (T+1,) float32 schedule, step i goes sigmas[i] -> sigmas[i+1].
    timesteps:   (T,) int32 timesteps given to the network at each step, int(σ_i·1000).
    sde_mask:    (T,) bool, True where the step was stochastic (has a log-probability).
    train_steps: (S,) int32 indices of the steps to train (all are SDE steps).
    """

    latents: jax.Array
    log_probs: jax.Array
    sigmas: jax.Array
    timesteps: jax.Array
    sde_mask: jax.Array
    train_steps: jax.Array

    @property
    def z0(self) -> jax.Array:
        """(B, ...) final sample."""
        return self.latents[-1]

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[0]


def tree_batch_size(tree: Any, name: str) -> int | None:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{name}: empty pytree")
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"{name}: every leaf needs the same leading batch dim, got leading dims {sizes}")
    return sizes.pop()


def _interleave(a: jax.Array, b: jax.Array) -> jax.Array:
    """(B, ...), (B, ...) -> (2B, ...) with rows a0, b0, a1, b1, ..."""
    return jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])


def cfg_text(cond: Any, uncond: Any, batch: int) -> Any:
    """The (2B, ...) interleaved text pytree [c0, u0, c1, u1, ...]; `uncond` leaves may have leading dim 1."""
    nc = tree_batch_size(cond, "cond")
    if nc != batch:
        raise ValueError(f"cond has batch {nc}, latents have batch {batch}")
    nu = tree_batch_size(uncond, "uncond")
    if nu not in (1, batch):
        raise ValueError(f"uncond must have batch 1 or {batch}, got {nu}")
    if jax.tree.structure(cond) != jax.tree.structure(uncond):
        raise ValueError("cond and uncond must be pytrees of the same structure")

    def one(c, u):
        if c.shape[1:] != u.shape[1:]:
            raise ValueError(f"cond leaf {c.shape} and uncond leaf {u.shape} differ beyond the batch dim")
        u = jnp.broadcast_to(u, c.shape).astype(c.dtype)
        return _interleave(c, u)

    return jax.tree.map(one, cond, uncond)


def guided_velocity(
    velocity_fn: VelocityFn,
    x: jax.Array,
    t: jax.Array,
    cond: Any,
    uncond: Any | None,
    cfg_scale: float | jax.Array,
    text2: Any | None = None,
) -> jax.Array:
    """CFG velocity v_u + w·(v_c − v_u) (B, ...) float32 with ONE call of velocity_fn on the interleaved 2B batch.

    t: (B,) int32. With uncond None there is no guidance: one call on the B batch with `cond`.
    `text2`, when given, is the precomputed `cfg_text(cond, uncond, B)` (saves re-interleaving inside a scan).
    """
    b = x.shape[0]
    if uncond is None and text2 is None:
        v = velocity_fn(x, t, cond)
        if v.shape != x.shape:
            raise ValueError(f"velocity_fn returned {v.shape}, expected {x.shape}")
        return v.astype(jnp.float32)
    text = cfg_text(cond, uncond, b) if text2 is None else text2
    v = velocity_fn(_interleave(x, x), _interleave(t, t), text)
    if v.shape != (2 * b,) + x.shape[1:]:
        raise ValueError(f"velocity_fn returned {v.shape}, expected {(2 * b,) + x.shape[1:]} (interleaved CFG batch)")
    v = v.astype(jnp.float32).reshape((b, 2) + x.shape[1:])
    v_c, v_u = v[:, 0], v[:, 1]
    return v_u + jnp.asarray(cfg_scale, jnp.float32) * (v_c - v_u)


def num_train_steps(num_steps: int, train_fraction: float) -> int:
    """Flow-GRPO's int(T·timestep_fraction): with T = 20 and 0.99 the last step is not trained (steps 0..18)."""
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must lie in (0, 1], got {train_fraction}")
    # Exactly Flow-GRPO's int(T * fraction) on the float64 product (50 × 0.58 = 28.999… trains 28 steps).
    n = int(num_steps * train_fraction)
    if n < 1:
        raise ValueError(f"train_fraction {train_fraction} of {num_steps} steps trains no step")
    return n


def _schedule(sigmas: Any) -> tuple[jax.Array, jax.Array]:
    if isinstance(sigmas, jax.core.Tracer):
        raise ValueError("sigmas must be concrete (a numpy array): the timesteps and the step count derive from them")
    given = np.asarray(sigmas)
    s = given.astype(np.float32)
    check_sigmas(s)
    # The timesteps come from the sigmas at the precision given: a float64 schedule gives diffusers' timesteps.
    return jnp.asarray(s), jnp.asarray(_timesteps(given[:-1]))


def rollout(
    velocity_fn: VelocityFn,
    x_init: jax.Array,
    sigmas: Any,
    key: jax.Array,
    *,
    noise_rule: NoiseRule,
    cond: Any,
    uncond: Any | None = None,
    cfg_scale: float | jax.Array = 1.0,
    sde_window: tuple[Any, int] | None = None,
    train_fraction: float = 0.99,
) -> Trajectory:
    """SDE sampling of B samples over the schedule `sigmas` (T+1,) as a lax.scan, recording log-probabilities.

    sigmas: numpy; the math runs on its float32 values, the integer timesteps come from it at its own precision
        (pass the float64 schedule, wan_sigmas(T, shift, np.float64), for diffusers' timesteps).

    x_init: (B, ...) initial noise (float32); the K samples of a group are K rows with the same `cond`.
    key: one PRNG key; step i uses fold_in(key, i), noise is independent per element and per sample.
    sde_window: None -> every step is stochastic, the first int(T·train_fraction) steps are trained.
        (start, length) -> Flow-GRPO-Fast: only steps start..start+length−1 are stochastic and trained, all others
        are ODE steps. `length` is a Python int; `start` may be traced (e.g. drawn per iteration) and is clipped into
        [0, T − length]; a concrete start outside that range raises.
    Returns a Trajectory. Jit it by closing over velocity_fn / sigmas / noise_rule (they are static).
    """
    s, t_all = _schedule(sigmas)
    num_steps = s.shape[0] - 1
    if x_init.ndim < 1:
        raise ValueError(f"x_init must be (B, ...), got shape {x_init.shape}")
    b = x_init.shape[0]
    text2 = None if uncond is None else cfg_text(cond, uncond, b)
    if uncond is None and tree_batch_size(cond, "cond") != b:
        raise ValueError(f"cond has batch {tree_batch_size(cond, 'cond')}, latents have batch {b}")

    if sde_window is None:
        sde_mask = jnp.ones((num_steps,), bool)
        train_steps = jnp.arange(num_train_steps(num_steps, train_fraction), dtype=jnp.int32)
    else:
        start, length = sde_window
        if not isinstance(length, (int, np.integer)) or not 1 <= length <= num_steps:
            raise ValueError(f"sde_window length must be an int in [1, {num_steps}], got {length!r}")
        if not isinstance(start, jax.core.Tracer) and not 0 <= int(start) <= num_steps - length:
            raise ValueError(
                f"sde_window start {int(start)} must lie in [0, {num_steps - length}] for {num_steps} steps"
            )
        start = jnp.clip(jnp.asarray(start, jnp.int32), 0, num_steps - length)
        idx = jnp.arange(num_steps, dtype=jnp.int32)
        sde_mask = (idx >= start) & (idx < start + length)
        train_steps = start + jnp.arange(length, dtype=jnp.int32)

    def body(x, inp):
        i, sigma, sigma_next, t, is_sde = inp
        tb = jnp.full((b,), t, jnp.int32)
        v = guided_velocity(velocity_fn, x, tb, cond, uncond, cfg_scale, text2)
        mean, std = sde_step_mean_std(x, v, sigma, sigma_next, noise_rule)
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
        x_sde = mean + std * noise
        lp = log_prob(x_sde, mean, std)
        if sde_window is None:
            return x_sde, (x_sde, lp)
        x_next = jnp.where(is_sde, x_sde, ode_step(x, v, sigma, sigma_next))
        return x_next, (x_next, jnp.where(is_sde, lp, 0.0))

    x0 = x_init.astype(jnp.float32)
    xs = (jnp.arange(num_steps, dtype=jnp.int32), s[:-1], s[1:], t_all, sde_mask)
    _, (lat, lps) = jax.lax.scan(body, x0, xs)
    return Trajectory(
        latents=jnp.concatenate([x0[None], lat], axis=0),
        log_probs=lps,
        sigmas=s,
        timesteps=t_all,
        sde_mask=sde_mask,
        train_steps=train_steps,
    )


def ode_sample(
    velocity_fn: VelocityFn,
    x_init: jax.Array,
    sigmas: Any,
    *,
    cond: Any,
    uncond: Any | None = None,
    cfg_scale: float | jax.Array = 1.0,
) -> jax.Array:
    """Deterministic Euler sampling of the probability-flow ODE (evaluation): (B, ...) float32 z0."""
    s, t_all = _schedule(sigmas)
    b = x_init.shape[0]
    text2 = None if uncond is None else cfg_text(cond, uncond, b)

    def body(x, inp):
        sigma, sigma_next, t = inp
        v = guided_velocity(velocity_fn, x, jnp.full((b,), t, jnp.int32), cond, uncond, cfg_scale, text2)
        return ode_step(x, v, sigma, sigma_next), None

    z0, _ = jax.lax.scan(body, x_init.astype(jnp.float32), (s[:-1], s[1:], t_all))
    return z0


def make_rollout_fn(
    policy_fn: Callable[..., jax.Array],
    sigmas: Any,
    noise_rule: NoiseRule,
    *,
    cfg_scale: float = 1.0,
    sde_window_length: int | None = None,
    train_fraction: float = 0.99,
    jit: bool = True,
    in_shardings: Any = None,
    out_shardings: Any = None,
):
    """Builds rollout_fn(trainable, frozen, x_init, key, cond, uncond, window_start=None) -> Trajectory.

    `policy_fn(trainable, frozen, x, t, text)` is the training signature (grpo.PolicyFn); the rollout uses the current
    trainable params, so the stored log-probs are those of θ_old. With `sde_window_length` set, `window_start` (an
    int, may vary per call without recompiling) places the Flow-GRPO-Fast window; otherwise it must be None.
    Shardings are forwarded to jax.jit as given (in the argument order above).
    """
    s, _ = _schedule(sigmas)
    del s  # validated once here, not per call

    def rollout_fn(trainable, frozen, x_init, key, cond, uncond, window_start=None):
        if (window_start is None) != (sde_window_length is None):
            raise ValueError("window_start must be given exactly when sde_window_length is set")
        window = None if sde_window_length is None else (window_start, sde_window_length)
        vel = lambda x, t, text: policy_fn(trainable, frozen, x, t, text)  # noqa: E731
        return rollout(vel, x_init, sigmas, key, noise_rule=noise_rule, cond=cond, uncond=uncond,
                       cfg_scale=cfg_scale, sde_window=window, train_fraction=train_fraction)

    if not jit:
        return rollout_fn
    kwargs = {k: v for k, v in (("in_shardings", in_shardings), ("out_shardings", out_shardings)) if v is not None}
    return jax.jit(rollout_fn, **kwargs)


def branch_rollout(
    velocity_fn: VelocityFn,
    x_init: jax.Array,
    sigmas: Any,
    key: jax.Array,
    *,
    group_size: int,
    branch_step: int,
    sde_steps: int,
    noise_rule: NoiseRule,
    cond: Any,
    uncond: Any | None = None,
    cfg_scale: float | jax.Array = 1.0,
) -> Trajectory:
    """Branching rollout: ONE ODE path per prompt up to `branch_step`, then K = group_size copies that take
    `sde_steps` stochastic (trained) steps and finish with ODE steps.

    x_init: (P, ...) one initial noise per prompt; cond: text pytree with leading dim P (uncond: 1 or P).
    Returns a Trajectory over B = P·K rows, group-major (row p·K + k: prompt p, copy k, the order of
    rewards.group_advantages' (P, K) reshape); latents before the branch are the shared path repeated K times,
    train_steps = branch_step .. branch_step + sde_steps − 1. The pre-branch ODE costs P instead of P·K rows.
    """
    s, t_all = _schedule(sigmas)
    num_steps = s.shape[0] - 1
    for name, val in (("group_size", group_size), ("branch_step", branch_step), ("sde_steps", sde_steps)):
        if not isinstance(val, (int, np.integer)):
            raise ValueError(f"branch_rollout: {name} must be a Python int (it fixes shapes), got {val!r}")
    if group_size < 1 or sde_steps < 1 or not 0 <= branch_step <= num_steps - sde_steps:
        raise ValueError(
            f"branch_rollout: need group_size >= 1, sde_steps >= 1 and 0 <= branch_step <= {num_steps} - sde_steps; "
            f"got group_size={group_size}, branch_step={branch_step}, sde_steps={sde_steps}"
        )
    p = x_init.shape[0]
    np_sigmas = np.asarray(sigmas)  # its own precision: the tail's timesteps come from it
    repeat = lambda a: jnp.repeat(a, group_size, axis=0)  # noqa: E731

    x = x_init.astype(jnp.float32)
    shared = [x]
    if branch_step > 0:
        text2 = None if uncond is None else cfg_text(cond, uncond, p)

        def body(x, inp):
            sigma, sigma_next, t = inp
            v = guided_velocity(velocity_fn, x, jnp.full((p,), t, jnp.int32), cond, uncond, cfg_scale, text2)
            x = ode_step(x, v, sigma, sigma_next)
            return x, x

        x, path = jax.lax.scan(body, x, (s[:branch_step], s[1:branch_step + 1], t_all[:branch_step]))
        shared.append(path)
    shared = jnp.concatenate([shared[0][None]] + ([shared[1]] if branch_step > 0 else []), axis=0)

    rep_cond = jax.tree.map(repeat, cond)
    rep_uncond = None if uncond is None else jax.tree.map(
        lambda u: u if u.shape[0] == 1 else repeat(u), uncond)
    tail = rollout(velocity_fn, repeat(x), np_sigmas[branch_step:], key, noise_rule=noise_rule, cond=rep_cond,
                   uncond=rep_uncond, cfg_scale=cfg_scale, sde_window=(0, sde_steps))
    b = p * group_size
    return Trajectory(
        latents=jnp.concatenate([jax.vmap(repeat)(shared[:-1]), tail.latents], axis=0),
        log_probs=jnp.concatenate([jnp.zeros((branch_step, b), jnp.float32), tail.log_probs], axis=0),
        sigmas=s,
        timesteps=t_all,
        sde_mask=jnp.concatenate([jnp.zeros((branch_step,), bool), tail.sde_mask]),
        train_steps=tail.train_steps + branch_step,
    )
