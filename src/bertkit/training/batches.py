"""In-memory examples as the loop's ``Batches``: shuffled each epoch, shared among ranks, resumable.

For data that fits in memory (fine-tuning features, tests). Pretraining data on disk has its own
stream, ``PretrainingDataset.iterate``, with the same contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bertkit.errors import BertkitError, check_resume_state


class ArrayBatches:
    """Examples given as equally long arrays, served epoch after epoch.

    Epoch e's order is numpy's permutation for (seed, e) (or storage order without ``shuffle``);
    rank r of W takes positions r, r + W, ... of the first N - N % W, so ranks never overlap and a
    global batch is the same examples whatever W is. ``state_dict()`` is (epoch, offset).
    """

    def __init__(self, features: Mapping[str, np.ndarray], seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        self.features = {k: np.asarray(v) for k, v in features.items()}
        lengths = {len(v) for v in self.features.values()}
        if len(lengths) != 1:
            raise BertkitError(f"features of different lengths: {sorted(lengths)}")
        self.num_examples = lengths.pop()
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.per_epoch = self.num_examples // world_size
        if self.per_epoch == 0:
            raise BertkitError(f"{self.num_examples} examples cannot be shared by {world_size} processes")
        self.epoch, self.offset = 0, 0
        self._order: tuple[int, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's example indices for ``epoch``, int64 (per_epoch,)."""
        n = self.num_examples
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return order[: n - n % self.world_size][self.rank::self.world_size]

    def next_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """The next ``batch_size`` examples, continuing into the next epoch when one ends."""
        parts = []
        while batch_size > 0:
            if self._order is None or self._order[0] != self.epoch:
                self._order = (self.epoch, self.epoch_order(self.epoch))
            take = min(batch_size, self.per_epoch - self.offset)
            parts.append(self._order[1][self.offset:self.offset + take])
            self.offset += take
            batch_size -= take
            if self.offset == self.per_epoch:
                self.epoch, self.offset = self.epoch + 1, 0
        rows = np.concatenate(parts)
        return {k: v[rows] for k, v in self.features.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "num_examples": self.num_examples, "epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict()``; the examples, seed and ranks must be the same."""
        check_resume_state(state, self.state_dict(), ("seed", "rank", "world_size", "num_examples"), "these batches")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
