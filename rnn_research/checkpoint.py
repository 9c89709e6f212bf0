"""A trial's checkpoints in its workdir: `checkpoints/latest` (everything needed to resume:
train state, data position, early-stopping bookkeeping) and `checkpoints/best` (the train state at
the best validation epoch), each an orbax step directory keyed by epoch.
"""
import pathlib
import shutil

import orbax.checkpoint as ocp


class Checkpoints:
  """Saves and restores {"state": pytree, "meta": JSON dict} under `workdir/checkpoints/<kind>`."""

  KINDS = ("latest", "best")

  def __init__(self, workdir: str | pathlib.Path):
    self._root = pathlib.Path(workdir).absolute() / "checkpoints"
    self._managers = {kind: self._manager(kind) for kind in self.KINDS}

  def _manager(self, kind: str) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    return ocp.CheckpointManager(self._root / kind, options=options)

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

  def meta(self, kind: str = "latest") -> dict:
    """The meta dict of the newest checkpoint of `kind`, without reading its state."""
    manager = self._managers[kind]
    return manager.restore(manager.latest_step(),
                           args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def discard(self, kind: str) -> None:
    """Deletes the checkpoints of `kind` (a later save of a lower epoch would be ignored)."""
    self._managers[kind].close()
    shutil.rmtree(self._root / kind)
    self._managers[kind] = self._manager(kind)

  def close(self) -> None:
    for manager in self._managers.values():
      manager.close()
