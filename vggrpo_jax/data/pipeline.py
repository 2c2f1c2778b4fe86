"""grain pipelines over prompts: shuffled, repeated, split per host, with a checkpointable position."""

from __future__ import annotations

from typing import Any, Sequence

import grain
import jax


class PromptBatches:
    """An endless iterator of prompt-index batches for this host.

    Every host draws from the same seeded global order and takes its own contiguous slice of each global batch, so
    the global batch is the same whatever the number of hosts. `get_state()` / `set_state()` let a resumed run continue
    at exactly the batch it would have drawn next.

    Args:
      num_prompts: size of the prompt list (indices 0..num_prompts−1 are yielded).
      global_batch: prompts per global batch (all hosts together); must be divisible by the host count.
      seed: shuffling seed (reshuffled each epoch by grain).
    """

    def __init__(self, num_prompts: int, global_batch: int, seed: int, shuffle: bool = True,
                 process_index: int | None = None, process_count: int | None = None):
        if num_prompts < 1:
            raise ValueError("PromptBatches: the prompt list is empty")
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if global_batch % self.process_count:
            raise ValueError(f"global batch {global_batch} is not divisible by {self.process_count} hosts")
        self.local_batch = global_batch // self.process_count
        ds = grain.MapDataset.range(num_prompts)
        if shuffle:
            ds = ds.shuffle(seed=seed)
        ds = ds.repeat().batch(global_batch, drop_remainder=True)
        lo = self.process_index * self.local_batch
        self._ds = ds.map(lambda b: b[lo : lo + self.local_batch])
        self._it = iter(self._ds)

    def __iter__(self):
        return self

    def __next__(self) -> Sequence[int]:
        return [int(i) for i in next(self._it)]

    def get_state(self) -> dict[str, Any]:
        return dict(self._it.get_state())

    def set_state(self, state: dict[str, Any]) -> None:
        self._it.set_state(state)
