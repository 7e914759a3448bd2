"""Deterministic, rank-aware and resumable batch sampling shared by every DataModule.

Training batches are a pure function of ``(seed, epoch, batch position, rank)``: the permutation of an epoch
comes from a generator seeded with ``seed + epoch``, each rank takes every ``world_size``-th batch of it, and
the loader reports how many batches training has consumed so a run killed mid-epoch resumes on the very next
batch (Lightning stores ``state_dict()`` of stateful loaders in its checkpoints). Every DataModule builds its loaders
with :func:`training_loader` and :func:`evaluation_loader`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def _distributed_rank_and_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardedBatchSampler(DistributedSampler):
    """Yields index batches (``LongTensor``) for this rank; resumable mid-epoch.

    It subclasses ``DistributedSampler`` because it *is* one: Lightning then leaves it in place instead of
    wrapping it in its own distributed sampler. The rank and world size are read when the sampler is built
    (DataModules build loaders after the process group exists).

    Training (``drop_last=True``) gives every rank the same number of batches, leaving out the last
    ``batches % world_size``: the gradient all-reduce needs every rank in every step. Evaluation and prediction
    (``drop_last=False``) give each rank a contiguous share of the items (sizes differ by at most one), cut into
    batches: nothing is padded or left out, so validation metrics (synchronised once, at the end of the epoch)
    count every sample once, and every rank has at least one batch, so every rank reaches that synchronisation
    (a rank without a batch would skip it and leave the others waiting). ``equal_shares`` overrides the choice.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, equal_shares: bool | None = None) -> None:
        if num_items <= 0:
            raise ValueError("cannot sample batches from an empty dataset")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.equal_shares = drop_last if equal_shares is None else equal_shares
        self.rank, self.num_replicas = _distributed_rank_and_size()
        if not self.equal_shares and num_items < self.num_replicas:
            raise ValueError(f"{num_items} samples cannot be shared by {self.num_replicas} processes: every process "
                             "needs at least one (use fewer devices for evaluation)")
        self.epoch = 0
        self._resume_position = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._resume_position = 0
        self.epoch = epoch

    def _epoch_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator)
        else:
            order = torch.arange(self.num_items)
        if not self.equal_shares:
            return list(order.tensor_split(self.num_replicas)[self.rank].split(self.batch_size))
        batches = list(order.split(self.batch_size))
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[self.rank:usable:self.num_replicas]

    def __len__(self) -> int:
        return len(self._epoch_batches())

    def __iter__(self) -> Iterator[torch.Tensor]:
        start, self._resume_position = self._resume_position, 0
        yield from self._epoch_batches()[start:]

    def state_dict(self) -> dict[str, int]:
        """Epoch and the position the next iteration starts at (non-zero only right after a resume)."""
        return {"epoch": self.epoch, "resume_position": self._resume_position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]
        self._resume_position = state["resume_position"]


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ShardedBatchSampler` whose dataset takes a whole index batch at once.

    ``dataset[index_tensor]`` returns the collated batch, so a batch is one vectorised gather from an in-memory
    or memory-mapped cache rather than ``batch_size`` Python calls. ``state_dict`` counts the batches this
    loader handed to training, not those its workers fetched ahead, so a resumed epoch continues exactly after
    the last batch the checkpointed step consumed.
    """

    def __init__(self, dataset: Dataset, sampler: ShardedBatchSampler, num_workers: int = 0,
                 pin_memory: bool = False, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=num_workers > 0, **kwargs)
        self._consumed = 0

    def __iter__(self) -> Iterator[Any]:
        self._consumed = self.sampler.state_dict()["resume_position"]
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "consumed": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict({"epoch": state["epoch"], "resume_position": state["consumed"]})


def training_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0,
                    items: str = "samples") -> ResumableDataLoader:
    """Shuffled, rank-sharded, resumable batches of ``dataset``, the incomplete last batch dropped.

    Raises ``ValueError`` (naming the count of ``items``) when ``dataset`` holds no complete batch.
    """
    if len(dataset) < batch_size:
        raise ValueError(f"the training set has {len(dataset)} {items}, fewer than batch_size {batch_size}: no "
                         "complete batch")
    return ResumableDataLoader(dataset, sampler=ShardedBatchSampler(len(dataset), batch_size, seed),
                               num_workers=num_workers, pin_memory=torch.cuda.is_available())


def evaluation_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> ResumableDataLoader:
    """Every sample of ``dataset`` exactly once, in order, each rank a contiguous share (validation, test and
    prediction), the last partial batch kept.

    The sampler is passed as a keyword argument so that Lightning's predict loop can re-create the loader.
    """
    sampler = ShardedBatchSampler(len(dataset), batch_size, shuffle=False, drop_last=False, equal_shares=False)
    return ResumableDataLoader(dataset, sampler=sampler, num_workers=num_workers, pin_memory=torch.cuda.is_available())
