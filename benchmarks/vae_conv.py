"""Which form of the Wan VAE's 3×3×3 causal convolution is fastest on this backend? Side by side, one run.

    python benchmarks/vae_conv.py [--batch=4] [--frames=17] [--repeats=5]

The toy VAE's training step is convolution-bound (few channels, full resolution). Three forms of the same
arithmetic, forward + backward (gradients for input and kernel), at the toy VAE's layer shapes for crops of
`frames` × 32 × 32 (+2 causal frames, spatially "SAME"):

    taps     the project's form (vae_layers.CausalConv3d.conv): one 2D convolution per temporal tap, summed
    im2col   the 27 shifted views concatenated on channels, one matmul
    conv3d   one native 3D convolution

Prints milliseconds (best of `repeats`) and each form's time relative to `taps`. Checks that the three agree first.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.models.wan.vae_layers import CausalConv3d

# (in, out, spatial size): the toy VAE's (base 16, ×(1, 2, 4, 4)) full, ½ and ⅛ resolution layers, its RGB
# input and output convolutions.
SHAPES = [(16, 16, 32), (32, 32, 16), (64, 64, 8), (3, 16, 32), (16, 3, 32)]


def im2col(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    kt, kh, kw, _, o = w.shape
    t = x.shape[1] - kt + 1
    h, wd = x.shape[2], x.shape[3]
    xp = jnp.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + t, j:j + h, k:k + wd] for i in range(kt) for j in range(kh)
                            for k in range(kw)], -1)
    return cols @ w.reshape(-1, o) + b


def conv3d(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    pad = ((0, 0), (w.shape[1] // 2, w.shape[1] // 2), (w.shape[2] // 2, w.shape[2] // 2))
    return jax.lax.conv_general_dilated(x, w, (1, 1, 1), pad, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) + b


def _best_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"backend {jax.default_backend()}, batch {args.batch}, {args.frames} frames (+2 causal), fwd+bwd, ms")
    print(f"{'in→out @ size':>16} {'taps':>9} {'im2col':>9} {'conv3d':>9} {'im2col/taps':>12} {'conv3d/taps':>12}")
    for c_in, c_out, size in SHAPES:
        layer = CausalConv3d(c_in, c_out, (3, 3, 3), padding=(1, 1, 1), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(layer)
        w, b = layer.kernel.get_value(), layer.bias.get_value()
        x = jnp.asarray(rng.standard_normal((args.batch, args.frames + 2, size, size, c_in)), jnp.float32)
        # Each form takes (x, its parameters as a pytree); the gradient is taken for both.
        forms = {
            "taps": (lambda x, st: nnx.merge(graphdef, st).conv(x), state),
            "im2col": (lambda x, wb: im2col(x, *wb), (w, b)),
            "conv3d": (lambda x, wb: conv3d(x, *wb), (w, b)),
        }
        ref = np.asarray(jax.jit(forms["taps"][0])(x, state))
        for name in ("im2col", "conv3d"):
            fn, p = forms[name]
            err = float(np.abs(np.asarray(jax.jit(fn)(x, p)) - ref).max())
            if err > 1e-3 * max(1.0, float(np.abs(ref).max())):
                raise AssertionError(f"{name} disagrees with taps by {err}")
        ms = {}
        for name, (fn, p) in forms.items():
            grad = jax.jit(jax.grad(lambda x, p, fn=fn: jnp.sum(fn(x, p) ** 2), argnums=(0, 1)))
            ms[name] = _best_ms(grad, x, p, repeats=args.repeats)
        print(f"{f'{c_in}→{c_out} @ {size}²':>16} {ms['taps']:9.1f} {ms['im2col']:9.1f} {ms['conv3d']:9.1f} "
              f"{ms['im2col'] / ms['taps']:12.2f} {ms['conv3d'] / ms['taps']:12.2f}")


if __name__ == "__main__":
    main()
