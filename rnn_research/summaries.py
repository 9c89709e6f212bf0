"""A model's parameters by submodule, and the shapes a call returns:

    print(rr.summary(model, xs))     # model = rr.LSTM(88, 128, num_layers=2, rngs=nnx.Rngs(0))

Flax's `nnx.tabulate` fails on this library's layers (flax 0.12): rendering a call's outputs, it
rebuilds their structure as lists and dicts and cannot place a NamedTuple that sits inside a
tuple (the LSTM's carries, `cells.LSTMCarry`), a TypeError in `flax.nnx.summary`; the
parameters themselves are plain `nnx.Param`s. This table reads them with `nnx.iter_graph`.
"""
import dataclasses
import math

import jax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Row:
  """One submodule that holds parameters: path ("layers/0/1"), type name (a cell module's with
  its definition's, "CellModule[LSTMDef]"), {parameter name: (shape, dtype name)}."""
  path: str
  kind: str
  params: dict

  @property
  def count(self) -> int:
    return sum(math.prod(shape) for shape, _ in self.params.values())


def parameter_rows(module: nnx.Module) -> list[Row]:
  """The submodules of `module` (itself included) that hold `nnx.Param`s directly, in graph
  order, each with its own parameters."""
  modules, params = {}, {}
  for path, node in nnx.iter_graph(module):
    if isinstance(node, nnx.Module):
      modules[path] = node
    elif isinstance(node, nnx.Param):
      value = node[...]
      params.setdefault(path[:-1], {})[str(path[-1])] = (tuple(value.shape), value.dtype.name)
  return [Row("/".join(map(str, path)) or "(top)", _kind(modules[path]), own)
          for path, own in params.items()]


def _kind(module: nnx.Module) -> str:
  definition = getattr(module, "definition", None)
  name = type(module).__name__
  return f"{name}[{type(definition).__name__}]" if definition is not None else name


class _Shape(str):
  """An output leaf as dtype[shape], shown unquoted inside the outputs' structure."""

  def __repr__(self):
    return str(self)


def _shape(shape, dtype) -> str:
  return f"{dtype}[{','.join(map(str, shape))}]"


def output_shapes(module: nnx.Module, *inputs, **kwargs):
  """The structure of `module(*inputs, **kwargs)` with each array as dtype[shape], traced
  abstractly on a copy: nothing runs and the module's state (its random streams included)
  stays as it is."""
  graphdef, state = nnx.split(module)
  call = lambda state, *inputs: nnx.merge(graphdef, state)(*inputs, **kwargs)
  outputs = jax.eval_shape(call, state, *inputs)
  return jax.tree.map(lambda leaf: _Shape(_shape(leaf.shape, leaf.dtype)), outputs)


def summary(module: nnx.Module, *inputs, **kwargs) -> str:
  """A table of `module`'s parameters: one line per submodule that holds some (path, type,
  each parameter's dtype[shape], their count), then the total; given inputs, a last line with
  the outputs of `module(*inputs, **kwargs)` as dtype[shape] (see `output_shapes`)."""
  rows = parameter_rows(module)
  table = [("path", "type", "parameters", "count")]
  table += [(row.path, row.kind, "  ".join(f"{name} {_shape(*spec)}"
                                            for name, spec in row.params.items()),
             f"{row.count:,}") for row in rows]
  table.append(("total", type(module).__name__, "", f"{sum(row.count for row in rows):,}"))
  widths = [max(len(line[k]) for line in table) for k in range(4)]
  lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(line[:3], widths)),
                      line[3].rjust(widths[3])]) for line in table]
  if inputs or kwargs:
    lines.append(f"outputs: {output_shapes(module, *inputs, **kwargs)!r}")
  return "\n".join(lines)
