"""Mesh construction, logical-axis rules and placement on 8 simulated CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from vggrpo_jax import parallel as par
from vggrpo_jax.parallel.rules import logical_to_spec


def test_make_mesh_fills_free_axis_and_rejects_bad_sizes():
    mesh = par.make_mesh({"fsdp": 2, "tensor": -1})
    assert dict(mesh.shape) == {"data": 1, "fsdp": 2, "context": 1, "tensor": 4}
    assert par.make_mesh(None).shape["fsdp"] == 8
    with pytest.raises(ValueError, match="3 devices|not divisible"):
        par.make_mesh({"fsdp": 3, "tensor": -1})
    with pytest.raises(ValueError, match="use 4 devices but 8"):
        par.make_mesh({"fsdp": 2, "tensor": 2})
    with pytest.raises(ValueError, match="at most one axis"):
        par.make_mesh({"fsdp": -1, "tensor": -1})


def test_logical_rules_map_drop_size_one_axes_and_indivisible_dims():
    mesh = par.make_mesh({"fsdp": 2, "tensor": 4})
    assert logical_to_spec(("embed", "mlp"), mesh) == P("fsdp", "tensor")
    assert logical_to_spec(("batch", "length", "act_embed"), mesh) == P("fsdp", None, None)  # data/context are 1
    assert logical_to_spec(("embed", "heads"), mesh, shape=(8, 6)) == P("fsdp", None)  # 6 heads % 4
    with pytest.raises(KeyError, match="no rule"):
        logical_to_spec(("nonsense",), mesh)


def test_place_state_and_strict_divisibility():
    mesh = par.make_mesh({"fsdp": 2, "tensor": 4})
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
    model = nnx.Linear(8, 16, kernel_init=init, rngs=nnx.Rngs(0))
    state = par.place_state(nnx.state(model), mesh)
    assert state["kernel"].get_value().sharding.spec == P("fsdp", "tensor")
    np.testing.assert_array_equal(np.asarray(state["kernel"].get_value()), np.asarray(model.kernel[...]))
    odd = nnx.eval_shape(lambda: nnx.Linear(8, 6, kernel_init=init, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="kernel: shape \\(8, 6\\) is not divisible"):
        par.abstract_state_shardings(nnx.state(odd), mesh, strict=True)


def test_shard_batch_and_constrain_inside_jit():
    mesh = par.make_mesh({"data": 2, "fsdp": 4})
    batch = par.shard_batch({"x": np.arange(16.0).reshape(8, 2)}, mesh)
    assert batch["x"].sharding.spec[0] == ("data", "fsdp")
    with pytest.raises(ValueError, match="not divisible by 8 batch shards"):
        par.shard_batch(np.zeros((6, 2)), mesh)

    @jax.jit
    def f(x):
        return par.constrain(x * 2, ("batch", None))

    with jax.set_mesh(mesh):
        y = f(jnp.ones((8, 2)))
    assert y.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_array_equal(np.asarray(f(jnp.ones((3, 2)))), 2.0)  # no mesh: identity constraint
