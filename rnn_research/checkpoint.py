"""A trial's checkpoints in its workdir: `checkpoints/latest` (everything needed to resume:
train state, data position, early-stopping bookkeeping) and `checkpoints/best` (the train state at
the best validation epoch), each an orbax step directory keyed by epoch.
"""
import pathlib

import orbax.checkpoint as ocp


class Checkpoints:
  """Saves and restores {"state": pytree, "meta": JSON dict} under `workdir/checkpoints/<kind>`."""

  KINDS = ("latest", "best")

  def __init__(self, workdir: str | pathlib.Path):
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    root = pathlib.Path(workdir).absolute() / "checkpoints"
    self._managers = {kind: ocp.CheckpointManager(root / kind, options=options)
                      for kind in self.KINDS}

  def save(self, kind: str, epoch: int, state, meta: dict) -> None:
    """Writes and waits, so a kill right after never leaves a half-written latest."""
    manager = self._managers[kind]
    manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()

  def latest_epoch(self, kind: str = "latest") -> int | None:
    return self._managers[kind].latest_step()

  def restore(self, kind: str, abstract_state) -> tuple[object, dict]:
    """(state shaped like `abstract_state`, meta) of the newest checkpoint of `kind`."""
    manager = self._managers[kind]
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def close(self) -> None:
    for manager in self._managers.values():
      manager.close()
