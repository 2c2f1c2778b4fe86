"""The toyworld dataset's clips by seed: read from the tfds dataset, or rendered with its own record function.

Both give the same clips (`toyworld_tfds.render_record` is what the builder stores), in seed order: the first
`num_clips` seeds of a split (`toyworld_tfds.split_seeds`). Jobs that cache something per clip (geometry targets,
VAE latents) read their clips here.
"""

from __future__ import annotations

from typing import Any

from vggrpo_jax.data import toyworld_tfds as T

SOURCES = ("tfds", "render")


class RenderedSplit:
    """Item i is `decode(render_record(seed_i))` for the i-th seed of the split: the dataset's clip, bit for bit."""

    def __init__(self, split: str, num_clips: int, config: Any):
        """config: a toyworld builder config (`builder_config`): split sizes and scene settings."""
        self.seeds = list(T.split_seeds(split, config.num_train, config.num_heldout))[:num_clips]
        if len(self.seeds) < num_clips:
            raise ValueError(f"toyworld: {num_clips} clips requested from the {split!r} split of {len(self.seeds)} "
                             f"seeds")
        self.base = config.toyworld_config()

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return T.decode(T.render_record(self.seeds[i], self.base))


def builder_config(name: str) -> Any:
    """The toyworld tfds builder config `name` ("zoo", "tiny"): clip shape, split sizes, scene settings."""
    configs = {b.name: b for b in T.Toyworld.BUILDER_CONFIGS}
    if name not in configs:
        raise ValueError(f"toyworld config {name!r} is not one of {sorted(configs)}")
    return configs[name]


def load_split(split: str, num_clips: int, *, source: str = "tfds", data_dir: str | None = None,
               data_config: str = "zoo"):
    """The decoded clips of the first `num_clips` seeds of toyworld `split`, from the tfds dataset (`source="tfds"`)
    or rendered on demand (`source="render"`, with the builder config's scene settings). A sequence: len(), [i]."""
    if source == "render":
        return RenderedSplit(split, num_clips, builder_config(data_config))
    if source != "tfds":
        raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
    ds = T.load(split, data_dir=data_dir, config=data_config)
    if num_clips > len(ds):
        raise ValueError(f"toyworld: {num_clips} clips requested from toyworld/{data_config} {split!r}, which has "
                         f"{len(ds)}")
    src = T.data_source(split, data_dir=data_dir, config=data_config)
    order = sorted(range(len(src)), key=lambda i: int(src[i]["seed"]))[:num_clips]
    return [ds[i] for i in order]


__all__ = ["RenderedSplit", "SOURCES", "builder_config", "load_split"]
