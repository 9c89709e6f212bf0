"""An exclusive lock between the processes of one machine."""
import contextlib
import fcntl


@contextlib.contextmanager
def file_lock(path, blocking: bool = True):
  """Holds an exclusive lock on the file at `path` (created if missing) while in the block,
  and yields True; without `blocking`, yields False at once if another process holds it."""
  with open(path, "a") as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
      yield False
      return
    try:
      yield True
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)
