"""PyTorch side of benchmarks/rnn_cpu.py, run in its own Python (one that has torch).

Reads JSON commands, one per line, on stdin and answers one JSON line each:
  {"op": "setup", "batch", "time", "in_features", "hidden", "seed", "path"}
      builds nn.LSTM and its input, saves the state dict, input, output and the gradients of
      sum(y * weights) to `path` (.npz) for the correctness check -> {"ok": true, "torch": version}
  {"op": "time", "pass": "fwd" | "fwdbwd" | "step_matmuls"}  -> {"ms": one timed call}
      ("step_matmuls": the forward time loop's matmuls alone, `time` dependent h @ R_hh^T
      through tanh, in a Python loop)
  {"op": "quit"}
"""
import json
import sys
import time

import numpy as np
import torch


def main():
  model = x = weights = None
  for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "setup":
      torch.manual_seed(command["seed"])
      model = torch.nn.LSTM(command["in_features"], command["hidden"], batch_first=True)
      x = torch.randn(command["batch"], command["time"], command["in_features"], requires_grad=True)
      y, _ = model(x)
      weights = torch.randn(y.shape)
      (y * weights).sum().backward()
      arrays = {f"sd/{k}": v.detach().numpy() for k, v in model.state_dict().items()}
      arrays.update({f"grad/{k}": p.grad.numpy() for k, p in model.named_parameters()})
      np.savez(command["path"], x=x.detach().numpy(), y=y.detach().numpy(),
               weights=weights.numpy(), grad_x=x.grad.numpy(), **arrays)
      reply = {"ok": True, "torch": torch.__version__, "threads": torch.get_num_threads()}
    elif command["op"] == "time":
      recurrent = model.weight_hh_l0.detach().T.contiguous()  # [H, 4H]
      hidden = recurrent.shape[0]
      start = time.perf_counter()
      if command["pass"] == "step_matmuls":
        with torch.no_grad():
          h = torch.zeros(x.shape[0], hidden)
          for _ in range(x.shape[1]):
            h = torch.tanh(h @ recurrent)[:, :hidden]
      elif command["pass"] == "fwd":
        with torch.no_grad():
          model(x)
      else:
        model.zero_grad()
        y, _ = model(x)
        (y * weights).sum().backward()
      reply = {"ms": 1e3 * (time.perf_counter() - start)}
    else:
      return
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
  main()
