"""Distributed strategies for modules that train several networks with separate optimisers.

Lightning's ``DDPStrategy`` wraps the whole LightningModule in one ``DistributedDataParallel``. A GAN step
runs two backward passes (discriminator, then generator) and each touches only one network's parameters, so
plain DDP fails with "parameters that were not used in producing the loss", and the usual escape hatch,
``find_unused_parameters=True``, walks the autograd graph on every backward. Here each trained network is
wrapped in its own DDP instead: every backward of that wrapper uses all of its parameters, so gradient
all-reduce overlaps with the backward pass as DDP intends and no unused-parameter search runs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@runtime_checkable
class SeparatelyWrappedNetworks(Protocol):
    """What a LightningModule offers to be trained with :class:`SeparateNetworksDDPStrategy`."""

    def wrap_networks_for_ddp(self, wrap: callable) -> None: ...

    def unwrap_networks(self) -> None: ...


class SeparateNetworksDDPStrategy(DDPStrategy):
    """DDP that wraps each network of an adversarial module separately (see the module docstring).

    Modules without ``wrap_networks_for_ddp`` are wrapped whole, exactly as by ``DDPStrategy``. The wrappers
    live outside the module's registered children, so parameter names, ``state_dict`` keys and checkpoints are
    the same as in single-device training.
    """

    strategy_name = "ddp_separate_networks"

    def configure_ddp(self) -> None:
        module = self.model
        if not isinstance(module, SeparatelyWrappedNetworks):
            super().configure_ddp()
            return
        device_ids = self.determine_ddp_device_ids()

        def wrap(network: nn.Module) -> DistributedDataParallel:
            return DistributedDataParallel(network, device_ids=device_ids, **self._ddp_kwargs)

        module.wrap_networks_for_ddp(wrap)

    def teardown(self) -> None:
        module = self.lightning_module
        if isinstance(module, SeparatelyWrappedNetworks):
            module.unwrap_networks()
        super().teardown()
