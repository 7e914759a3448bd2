"""When a training step logs: on the steps whose metrics Lightning writes, and where a run or epoch ends.

``self.log`` costs about half a millisecond of host time per value on the CPU machine (Lightning's result
collection copies and checks every logged value); a GAN step logging five values spent 3 ms per step on it, as
much as the rest of Lightning together. Lightning writes step metrics to the loggers every
``Trainer(log_every_n_steps=...)`` batches, so values logged on the other steps were never read by a logger. The
last batch of an epoch and the last steps before ``max_steps`` log too, so that ``trainer.callback_metrics`` (read
by checkpoint monitors, the final metrics table and callers of ``fit``) always holds the run's final values.
"""

from __future__ import annotations

import lightning as L

#: A GAN batch takes two optimizer steps, and ``max_steps`` counts optimizer steps.
_OPTIMIZER_STEPS_PER_BATCH = 2


def logs_this_step(module: L.LightningModule) -> bool:
    """True in the training steps whose logged metrics Lightning writes to the loggers (every
    ``log_every_n_steps`` batches), on the last batch of an epoch and on the last batch before ``max_steps``;
    False without a Trainer, where ``self.log`` does nothing either."""
    trainer = module._trainer
    if trainer is None:
        return False
    if trainer._logger_connector.should_update_logs or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
        return True
    return 0 < trainer.max_steps <= trainer.global_step + _OPTIMIZER_STEPS_PER_BATCH
