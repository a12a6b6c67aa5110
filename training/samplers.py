"""Class-balanced batches: P classes × K images each, what ranking losses need (every query has positives)."""

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from geosearch.errors import GeosearchError


class PKSampler(Sampler[list[int]]):
    """Batches of `classes` distinct classes with `per_class` images each, drawn without replacement within an
    epoch where a class has enough images (with replacement only for a class smaller than `per_class`).
    An epoch has as many batches as the data holds whole batches; `set_epoch` reshuffles reproducibly."""

    def __init__(self, labels: Sequence[int], classes: int, per_class: int, seed: int = 0):
        self.labels = np.asarray(labels)
        self.by_class = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        if classes > len(self.by_class):
            raise GeosearchError(f"{classes} classes per batch, but the data has {len(self.by_class)} "
                                 "(lower classes_per_batch)")
        if per_class < 2:
            raise GeosearchError("per_class must be at least 2, or queries have no positives")
        self.classes, self.per_class, self.seed, self.epoch = classes, per_class, seed, 0

    def __len__(self) -> int:
        return len(self.labels) // (self.classes * self.per_class)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        pools = {c: list(rng.permutation(members)) for c, members in self.by_class.items()}
        for _ in range(len(self)):
            # Classes with the most images left go first, at random among equals, so classes are used evenly.
            left = np.array([len(pools[c]) for c in self.by_class])
            keys = np.array(list(self.by_class))
            order = np.lexsort((rng.random(len(keys)), -left))
            batch: list[int] = []
            for c in keys[order[:self.classes]]:
                pool = pools[int(c)]
                if len(pool) < self.per_class:  # refill, without repeating what is left in this batch
                    pool.extend(i for i in rng.permutation(self.by_class[int(c)]) if i not in pool[:self.per_class])
                    while len(pool) < self.per_class:  # a class smaller than per_class repeats images
                        pool.extend(rng.permutation(self.by_class[int(c)]))
                batch.extend(int(i) for i in pool[:self.per_class])
                del pool[:self.per_class]
            yield batch
