"""Long token streams for truncated BPTT: documents (e.g. folk tunes, each `<start> text <end>`)
concatenated into one stream and cut into windows of a fixed length.

`StreamSource(documents, window)` is a random-access source whose example i is window i:
`inputs` = stream[iW : iW + W], `targets` = stream[iW + 1 : iW + W + 1] (the next tokens) and
`resets` [W] bool, True where a document begins (its `<start>`), so a model restarts its state
there. The stream's tail shorter than a window is dropped.
"""
import numpy as np


class StreamSource:
  """Windows of `window` steps of the concatenated id arrays `documents` (see module doc)."""

  def __init__(self, documents, window: int):
    if not isinstance(window, int) or window < 1:
      raise ValueError(f"window must be a positive int, got {window!r}")
    documents = [np.asarray(d, np.int32) for d in documents]
    if not documents or any(d.ndim != 1 or not len(d) for d in documents):
      raise ValueError("documents must be a non-empty list of non-empty 1-D id arrays")
    self.ids = np.concatenate(documents)
    self.starts = np.zeros(len(self.ids), bool)
    self.starts[np.cumsum([0] + [len(d) for d in documents[:-1]])] = True
    self.window = window
    self.size = (len(self.ids) - 1) // window
    if self.size < 1:
      raise ValueError(f"the stream of {len(self.ids)} tokens is too short for one window of "
                       f"{window} steps and its next token")

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.size:
      raise IndexError(f"index {index} out of range for a source of size {self.size}")
    begin, end = index * self.window, (index + 1) * self.window
    return {"inputs": self.ids[begin:end], "targets": self.ids[begin + 1:end + 1],
            "resets": self.starts[begin:end]}
