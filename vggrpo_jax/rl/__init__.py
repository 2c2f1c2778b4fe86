"""Model-agnostic Flow-GRPO core: Wan flow schedule, SDE/ODE steps with log-probs, rollouts, the GRPO objective and
the update step (gradient accumulation, clipping, AdamW on the trainable pytree, EMA, non-finite guard).

The network is always passed in as a function (see rollout.VelocityFn and grpo.PolicyFn); nothing here imports model
code. Advantages come from vggrpo_jax.rewards.
"""

from vggrpo_jax.rl.ema import EmaConfig, ema_decay, ema_update
from vggrpo_jax.rl.grpo import GrpoConfig, PolicyFn, grpo_loss, step_loss
from vggrpo_jax.rl.rollout import (
    Trajectory,
    VelocityFn,
    branch_rollout,
    guided_velocity,
    make_rollout_fn,
    num_train_steps,
    ode_sample,
    rollout,
)
from vggrpo_jax.rl.reward_guidance import (
    SCHEDULES,
    GuidanceOptions,
    GuidanceTrace,
    parse_steps,
    reward_guided_ode_sample,
    schedule_weight,
)
from vggrpo_jax.rl.schedule import timesteps, wan_sigmas, wan_timesteps
from vggrpo_jax.rl.sde import (
    NOISE_RULES,
    NoiseRule,
    gaussian_kl_same_std,
    log_prob,
    make_noise_rule,
    noise_level,
    ode_step,
    sde_step,
    sde_step_mean_std,
)
from vggrpo_jax.rl.sharding import batch_leading_sharding, replicated_sharding, trajectory_sharding
from vggrpo_jax.rl.train_step import (
    TrainState,
    UpdateConfig,
    accumulate_gradients,
    init_train_state,
    make_optimizer,
    make_train_step,
)

__all__ = [
    "EmaConfig", "ema_decay", "ema_update",
    "GrpoConfig", "PolicyFn", "grpo_loss", "step_loss",
    "Trajectory", "VelocityFn", "branch_rollout", "guided_velocity", "make_rollout_fn", "num_train_steps", "ode_sample", "rollout",
    "SCHEDULES", "GuidanceOptions", "GuidanceTrace", "parse_steps", "reward_guided_ode_sample", "schedule_weight",
    "timesteps", "wan_sigmas", "wan_timesteps",
    "NOISE_RULES", "NoiseRule", "gaussian_kl_same_std", "log_prob", "make_noise_rule", "noise_level", "ode_step",
    "sde_step", "sde_step_mean_std",
    "batch_leading_sharding", "replicated_sharding", "trajectory_sharding",
    "TrainState", "UpdateConfig", "accumulate_gradients", "init_train_state", "make_optimizer", "make_train_step",
]
