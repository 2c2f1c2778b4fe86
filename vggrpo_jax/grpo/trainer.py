"""One GRPO iteration in latent space, as three jitted stages:

    rollout   P prompts × K samples: SDE sampling with the LoRA policy (CFG, independent noise per sample)
              → Trajectory {x_i, log p_i} and z0                                       (rl/rollout.py)
    rewards   z0 → LGM → SceneGeometry → r_motion, r_geo (no VAE decoding)             (lgm/, rewards/)
              → group-normalised advantages A = Σ_j w_j·z_j / Σ_j w_j, clipped         (rewards/advantages.py)
    update    clipped surrogate + β·KL to the adapters-off reference, accumulated over micro-batches and trained
              steps → grad clip → AdamW on the LoRA pytree → EMA, skipped on any non-finite value  (rl/train_step.py)

Sample b of a batch is prompt b // K, member b % K of its group. Every batch-dim array is split over the mesh's
batch axes ("data", "fsdp"); the frozen base weights are FSDP-sharded by their logical axes; all three stages are
jitted under `jax.set_mesh(mesh)` and follow those input shardings.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vggrpo_jax import rl, training
from vggrpo_jax.models.wan.vae_config import check_num_frames
from vggrpo_jax.parallel import constrain, mesh_context, to_host
from vggrpo_jax.policy import Policy
from vggrpo_jax.rewards import RewardOptions, finite_stats, geometry_rewards, group_advantages

REWARD_NAMES = ("motion", "geo")


def latent_shape(config: Any, vae_config: Any, channels: int) -> tuple[int, int, int, int]:
    """(C, F', H', W') of the latents for config.video (F = 1 + 4k frames, H and W multiples of the VAE stride)."""
    v = config.video
    s, ts = vae_config.spatial_stride, vae_config.temporal_stride
    if v.height % s or v.width % s:
        raise ValueError(f"video {v.height}×{v.width} is not a multiple of the VAE's spatial stride {s}")
    try:
        check_num_frames(int(v.num_frames), ts)
    except ValueError as e:
        raise ValueError(f"config.video.num_frames={v.num_frames}: {e}") from None
    return channels, 1 + (v.num_frames - 1) // ts, v.height // s, v.width // s


def reward_options(config: Any) -> RewardOptions:
    """The reward options of a GRPO config (`config.rewards`; weights and adv_clip belong to the advantages)."""
    return RewardOptions.from_config(config.rewards, where="rewards", other_keys=("weights", "adv_clip"))


def _stats(name: str, x: jax.Array) -> dict[str, jax.Array]:
    """{name}_mean, {name}_std, {name}_nonfinite_frac (rewards.finite_stats: over the finite entries, e.g. r_geo =
    −inf left out). An iteration with no finite entry logs 0 for mean and std (training curves stay finite;
    nonfinite_frac = 1 marks it)."""
    return {f"{name}_{k}": v for k, v in finite_stats(x, empty=0.0).items()}


@dataclasses.dataclass
class GRPOTrainer:
    """The jitted stages of a GRPO iteration for one policy, one LGM and one latent shape."""

    config: Any  # the training ConfigDict
    policy: Policy
    lgm_graphdef: Any
    lgm_state: Any
    latent: tuple[int, int, int, int]  # (C, F', H', W')
    mesh: Mesh | None = None

    def __post_init__(self):
        c = self.config
        self.group_size = int(c.rl.group_size)
        # float64: the rollout derives the integer timesteps from it exactly as diffusers does (rl.timesteps).
        self.sigmas = rl.wan_sigmas(int(c.rl.num_steps), float(c.rl.shift), np.float64)
        scale = {"flow_grpo_wan": None, "sd3": float(c.rl.noise_a), "constant": float(c.rl.noise_eta)}[c.rl.noise_rule]
        self.noise_rule = rl.make_noise_rule(c.rl.noise_rule, self.sigmas.astype(np.float32), scale)
        self.grpo_config = rl.GrpoConfig(
            noise_rule=self.noise_rule, clip_eps=float(c.rl.clip_eps), beta=float(c.rl.beta),
            cfg_scale=float(c.rl.cfg_scale),
        )
        batch = int(c.rl.prompts_per_batch) * self.group_size
        micro = int(c.rl.micro_batch_size) or batch
        self.update_config = rl.UpdateConfig(
            num_micro_batches=batch // micro,
            max_grad_norm=float(c.optim.grad_clip) or None,
            ema=rl.EmaConfig(max_decay=float(c.ema.decay), every=int(c.ema.every)),
        )
        # The gradient is clipped inside the update (before the non-finite guard, reported as train/grad_norm), so
        # the optimizer itself does not clip again.
        self.optimizer = training.make_optimizer(training.OptimConfig.from_config(c.optim, grad_clip=0.0))
        self.reward_options = reward_options(c)
        reference = self.policy.reference_velocity if float(c.rl.beta) > 0 else None
        # Explicit output shardings for the update: the new train state lands exactly where the old one was (Adam
        # moments and EMA sharded like the adapters, scalars replicated), metrics replicated.
        self.state_shardings = None
        out_shardings = None
        if self.mesh is not None:
            init = jax.jit(lambda lora: rl.init_train_state(lora, self.optimizer, ema=True))
            with jax.set_mesh(self.mesh):
                self.state_shardings = init.lower(self.policy.lora).compile().output_shardings
            out_shardings = (self.state_shardings, NamedSharding(self.mesh, PartitionSpec()))
        # The train state is donated: the update writes the new adapters, moments and EMA into the old buffers.
        self._train_step = rl.make_train_step(self.policy.velocity, reference, self.optimizer, self.grpo_config,
                                              self.update_config, out_shardings=out_shardings, donate_state=True)
        self._rollout = jax.jit(self._rollout_impl)
        self._sample = jax.jit(self._ode_impl, static_argnums=(5,))
        self._rewards = jax.jit(self._rewards_impl)
        self._geometry_rewards = jax.jit(self._geometry_rewards_impl)

    # ------------------------------------------------------------------------------------------------ state
    def init_state(self) -> rl.TrainState:
        """Fresh adapters' train state, created on the mesh (moments and EMA sharded like the adapters)."""
        init = jax.jit(lambda lora: rl.init_train_state(lora, self.optimizer, ema=True),
                       out_shardings=self.state_shardings)
        with mesh_context(self.mesh):
            return init(self.policy.lora)

    # ------------------------------------------------------------------------------------------------ stages
    def _noise(self, key: jax.Array, batch: int) -> jax.Array:
        x = jax.random.normal(key, (batch,) + tuple(self.latent), jnp.float32)
        return constrain(x, ("batch", None, None, None, None))

    def _window(self, key: jax.Array) -> tuple[jax.Array, int] | None:
        size = int(self.config.rl.sde_window_size)
        if size <= 0:
            return None
        start = jax.random.randint(key, (), 0, int(self.config.rl.num_steps) - size + 1)
        return start, size

    @jax.named_scope("rollout")
    def _rollout_impl(self, lora, frozen, cond, uncond, key):
        k_noise, k_sde, k_window = jax.random.split(key, 3)
        x_init = self._noise(k_noise, cond.shape[0])
        velocity = functools.partial(self.policy.velocity, lora, frozen)
        return rl.rollout(
            velocity, x_init, self.sigmas, k_sde, noise_rule=self.noise_rule, cond={"emb": cond},
            uncond={"emb": uncond}, cfg_scale=float(self.config.rl.cfg_scale), sde_window=self._window(k_window),
            train_fraction=float(self.config.rl.timestep_fraction),
        )

    @jax.named_scope("ode_sample")
    def _ode_impl(self, lora, frozen, cond, uncond, key, num_steps: int):
        sigmas = rl.wan_sigmas(num_steps, float(self.config.rl.shift), np.float64)
        velocity = functools.partial(self.policy.velocity, lora, frozen)
        return rl.ode_sample(velocity, self._noise(key, cond.shape[0]), sigmas, cond={"emb": cond},
                             uncond={"emb": uncond}, cfg_scale=float(self.config.rl.cfg_scale))

    @jax.named_scope("lgm_rewards")
    def _geometry_rewards_impl(self, lgm_state, z0):
        geometry = nnx.merge(self.lgm_graphdef, lgm_state)(z0)
        return {**geometry_rewards(geometry, self.reward_options), "c2w": geometry.c2w}

    @jax.named_scope("rewards")
    def _rewards_impl(self, lgm_state, z0):
        lgm = nnx.merge(self.lgm_graphdef, lgm_state)
        with jax.named_scope("lgm"):
            geometry = lgm(z0)
        rewards = geometry_rewards(geometry, self.reward_options)
        b = z0.shape[0]
        p, k = b // self.group_size, self.group_size
        grouped = {n: rewards[n].reshape(p, k) for n in REWARD_NAMES}
        weights = {n: float(self.config.rewards.weights[n]) for n in REWARD_NAMES}
        adv = group_advantages(grouped, weights, clip=float(self.config.rewards.adv_clip)).reshape(b)
        metrics = {}
        for n in REWARD_NAMES:
            metrics.update(_stats(f"reward/{n}", rewards[n]))
            # Groups whose K samples all scored the same carry no learning signal for this reward.
            metrics[f"reward/{n}_zero_std_frac"] = jnp.mean(jnp.std(grouped[n], axis=1) == 0)
        metrics.update(_stats("reward/e_trans", rewards["e_trans"]))
        metrics.update(_stats("reward/e_rot", rewards["e_rot"]))
        metrics.update(_stats("advantage", adv))
        metrics["advantage/abs_max"] = jnp.max(jnp.abs(adv))
        raw = jnp.stack([rewards[n] for n in REWARD_NAMES], axis=-1)
        # −inf is a defined reward (r_geo of a view with no valid pixel: the worst in its group, handled by
        # group_advantages); only NaN means something broke, and the update step skips on non-finite rewards.
        raw = jnp.where(jnp.isneginf(raw), jnp.finfo(raw.dtype).min, raw)
        return adv, raw, metrics

    # ------------------------------------------------------------------------------------------------ API
    def iteration(self, state: rl.TrainState, cond: jax.Array, uncond: jax.Array, key: jax.Array,
                  timer: training.StepTimer | None = None):
        """rollout → rewards → update(s). cond (B, L, D) with rows grouped by prompt; uncond (1, L, D).

        `state` is donated to the update: use the returned state only. With `timer`, each stage is waited for and
        its seconds recorded (perf/{rollout,rewards,update}_seconds).
        Returns (new state, metrics dict of Python floats, z0).
        """
        timer = timer or training.StepTimer()
        wait = jax.block_until_ready
        with mesh_context(self.mesh):
            with timer.section("rollout"):
                traj = wait(self._rollout(state.params, self.policy.frozen, cond, uncond, key))
            with timer.section("rewards"):
                adv, raw, metrics = wait(self._rewards(self.lgm_state, traj.z0))
            with timer.section("update"):
                for _ in range(int(self.config.rl.inner_epochs)):
                    state, update_metrics = self._train_step(state, self.policy.frozen, traj, adv, {"emb": cond},
                                                             {"emb": uncond}, raw)
                wait(update_metrics)
        metrics = {**metrics, **{f"train/{k}": v for k, v in update_metrics.items()}}
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        return state, metrics, traj.z0

    def sample(self, lora: Any, cond: jax.Array, uncond: jax.Array, key: jax.Array, num_steps: int) -> jax.Array:
        """Deterministic ODE samples (evaluation) with the given adapters (e.g. the EMA)."""
        with mesh_context(self.mesh):
            return self._sample(lora, self.policy.frozen, cond, uncond, key, num_steps)

    def latent_rewards(self, z0: jax.Array) -> dict[str, np.ndarray]:
        """The LGM rewards of latents z0 (B, C, F', H', W') per sample, and the LGM cameras "c2w" (B, N, 4, 4)."""
        with mesh_context(self.mesh):
            out = self._geometry_rewards(self.lgm_state, z0)
        return to_host(out)  # gathered from every host when the batch spans several
