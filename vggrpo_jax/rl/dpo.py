"""Diffusion-DPO for flow matching (the Epipolar-DPO and VideoGPA objective), written once.

A preference pair is two clean latents x_w (preferred) and x_l of the same prompt. Both are noised with the SAME
noise ε and the same σ (the rectified-flow convention of rl/: x_σ = (1−σ)·x₀ + σ·ε, velocity target u = ε − x₀),
and the policy v_θ and the frozen reference v_ref (the base model: adapters off) predict their velocities:

    e_θ(x) = mean over elements of (v_θ(x_σ, σ) − u)²        e_ref(x) likewise with v_ref
    Δ_w = e_θ(x_w) − e_ref(x_w)                               Δ_l = e_θ(x_l) − e_ref(x_l)
    loss = −log σ(−β/2 · (Δ_w − Δ_l))                         averaged over the pairs of the batch

The objective is Wallace et al.'s Diffusion-DPO (CVPR 2024) with the ε-prediction error replaced by the
velocity error, as in the public Epipolar-DPO code (Flow-DPO strategy, β = 500) and VideoGPA's `epipolar_dpo`
strategy: both take the per-element MEAN squared error (so β does not scale with the latent size), fold the
T·ω(λ_t) weight of Diffusion-DPO's bound into β (a constant weight across t), and use the ½ factor of the
Diffusion-DPO code. (VideoGPA's own default `dpo` strategy omits the ½: its β is twice ours for the same loss.)

Implicit reward of a sample: r(x) = −β/2·(e_θ(x) − e_ref(x)); the loss is −log σ(r(x_w) − r(x_l)).
Metrics: `reward_margin` = mean(r_w − r_l), `implicit_accuracy` = fraction of pairs with r_w > r_l (a tie — θ = ref,
as at the start of training — counts ½), and the four mean errors.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def _per_sample_mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    d = pred.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.mean(jnp.square(d), axis=tuple(range(1, d.ndim)))


def flow_dpo_loss(v_w: jax.Array, v_l: jax.Array, v_ref_w: jax.Array, v_ref_l: jax.Array, u_w: jax.Array,
                  u_l: jax.Array, beta: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The flow-matching DPO loss from velocities (B, ...) of the policy and the reference on the noised winners and
    losers, and their targets u = ε − x₀ (B, ...). Returns (scalar loss, metrics). Everything in fp32."""
    shapes = {v.shape for v in (v_w, v_l, v_ref_w, v_ref_l, u_w, u_l)}
    if len(shapes) != 1 or v_w.ndim < 2:
        raise ValueError(f"flow_dpo_loss needs six arrays of one shape (B, ...), got {sorted(shapes)}")
    e_w, e_l = _per_sample_mse(v_w, u_w), _per_sample_mse(v_l, u_l)
    e_ref_w = jax.lax.stop_gradient(_per_sample_mse(v_ref_w, u_w))
    e_ref_l = jax.lax.stop_gradient(_per_sample_mse(v_ref_l, u_l))
    r_w = -0.5 * beta * (e_w - e_ref_w)
    r_l = -0.5 * beta * (e_l - e_ref_l)
    margin = r_w - r_l
    loss = jnp.mean(jax.nn.softplus(-margin))  # −log σ(m) = softplus(−m), stable for large |m|
    acc = jnp.mean(jnp.where(margin > 0, 1.0, jnp.where(margin < 0, 0.0, 0.5)))
    metrics = {
        "loss": loss, "reward_margin": jnp.mean(margin), "implicit_accuracy": acc,
        "reward_w": jnp.mean(r_w), "reward_l": jnp.mean(r_l),
        "err_w": jnp.mean(e_w), "err_l": jnp.mean(e_l), "err_ref_w": jnp.mean(e_ref_w), "err_ref_l": jnp.mean(e_ref_l),
    }
    return loss, jax.lax.stop_gradient(metrics)


def noised_pair(x0_w: jax.Array, x0_l: jax.Array, noise: jax.Array, sigma: jax.Array):
    """Clean latents (B, ...), shared noise (B, ...), σ (B,) → (x_w,σ, x_l,σ, u_w, u_l) in the rl/ convention."""
    s = sigma.astype(jnp.float32).reshape((-1,) + (1,) * (x0_w.ndim - 1))
    noise = noise.astype(jnp.float32)
    xt = lambda x0: (1.0 - s) * x0.astype(jnp.float32) + s * noise  # noqa: E731
    return xt(x0_w), xt(x0_l), noise - x0_w.astype(jnp.float32), noise - x0_l.astype(jnp.float32)


def flow_dpo_objective(velocity: Callable[..., jax.Array], ref_velocity: Callable[..., jax.Array], x0_w: jax.Array,
                       x0_l: jax.Array, noise: jax.Array, sigma: jax.Array, t: jax.Array, text: Any,
                       beta: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss from the two velocity functions: `velocity(x, t, text)` and `ref_velocity(x, t, text)`, each
    (2B, ...) → (2B, ...), are called once on winners and losers stacked along the batch (text duplicated).

    x0_w, x0_l, noise (B, C, F, H, W); sigma (B,) float; t (B,) the timesteps the model is conditioned on
    (e.g. rl.schedule.timesteps(sigma)); text: a pytree with batch-leading leaves (B, ...).
    """
    xw, xl, uw, ul = noised_pair(x0_w, x0_l, noise, sigma)
    b = x0_w.shape[0]
    x = jnp.concatenate([xw, xl], 0)
    tt = jnp.concatenate([t, t], 0)
    txt = jax.tree.map(lambda a: jnp.concatenate([a, a], 0), text)
    v = velocity(x, tt, txt)
    v_ref = jax.lax.stop_gradient(ref_velocity(x, tt, txt))
    return flow_dpo_loss(v[:b], v[b:], v_ref[:b], v_ref[b:], uw, ul, beta)


# ------------------------------------------------------------------------------------------------ the update
PolicyFn = Callable[[Any, Any, jax.Array, jax.Array, Any], jax.Array]  # (params, frozen, x, t, text) → v


def sample_noise_and_sigma(key: jax.Array, shape: tuple[int, ...], sigmas: jax.Array):
    """Shared noise ε (shape) and one σ per pair (shape[0],), uniform over the schedule's step starts
    sigmas[:-1] (Wan's shifted schedule, as the DPO codes draw training timesteps from the sampler's), and the
    integer timesteps int(σ·1000) the DiT is conditioned on."""
    k_noise, k_sigma = jax.random.split(key)
    starts = jnp.asarray(sigmas, jnp.float32)[:-1]
    sigma = starts[jax.random.randint(k_sigma, (shape[0],), 0, starts.shape[0])]
    t = jnp.trunc(sigma * 1000.0).astype(jnp.int32)  # rl.schedule.timesteps, traced
    return jax.random.normal(k_noise, shape, jnp.float32), sigma, t


def make_dpo_step(velocity: PolicyFn, ref_velocity: PolicyFn, optimizer: Any, *, beta: float, sigmas: Any):
    """A jittable DPO update: step(params, opt_state, frozen, batch, key) → (params, opt_state, metrics).

    batch: {"x0_w", "x0_l": (B, C, F, H, W) clean latents, "text": pytree with (B, ...) leaves}; key: this step's
    randomness (derive it from (seed, step), e.g. fold_in, so a resumed run repeats). `velocity`/`ref_velocity`
    have the Policy signature (params, frozen, x, t, text); `optimizer` an optax transformation (training/optim.py).
    """
    sigmas = jnp.asarray(sigmas, jnp.float32)

    def step(params, opt_state, frozen, batch, key):
        noise, sigma, t = sample_noise_and_sigma(key, batch["x0_w"].shape, sigmas)

        def loss_fn(p):
            return flow_dpo_objective(lambda x, tt, txt: velocity(p, frozen, x, tt, txt),
                                      lambda x, tt, txt: ref_velocity(p, frozen, x, tt, txt),
                                      batch["x0_w"], batch["x0_l"], noise, sigma, t, batch["text"], beta)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, metrics | {"grad_norm": optax.tree.norm(grads)}

    return step


__all__ = ["flow_dpo_loss", "flow_dpo_objective", "make_dpo_step", "noised_pair", "sample_noise_and_sigma"]
