"""Head-wise (block-diagonal) recurrence, as in FlashRNN and the sLSTM.

With K = num_heads heads of width d = N / K, the recurrent weight of G gate blocks is stored as
R [K, d, G, d]: head k's slice of h, h[:, k·d:(k+1)·d], feeds only head k's columns of every
gate, and the projection of gate g for head k is h_k @ R[k, :, g, :], written into the usual
gate-major layout [B, G·N] at columns g·N + k·d ... g·N + (k+1)·d. A dense weight [rows, cols]
(num_heads = 1) takes the plain matmul, so every function here is `r @ w` for it.

The per-step cost is G·N²/K multiply-adds instead of G·N².
"""
import jax
import jax.numpy as jnp

_orthogonal = jax.nn.initializers.orthogonal()


def check_num_heads(num_heads, hidden_size: int) -> None:
  if not isinstance(num_heads, int) or num_heads < 1 or hidden_size % num_heads:
    raise ValueError(f"num_heads must be a positive int that divides hidden_size={hidden_size}, "
                     f"got {num_heads!r}")


def weight_shape(hidden_size: int, num_gates: int, num_heads: int) -> tuple[int, ...]:
  """[N, G·N] dense, [K, d, G, d] head-wise."""
  if num_heads == 1:
    return (hidden_size, num_gates * hidden_size)
  d = hidden_size // num_heads
  return (num_heads, d, num_gates, d)


def orthogonal(key, shape, dtype):
  """Dense: orthogonal [N, G·N]; head-wise: one orthogonal [d, G·d] per head."""
  if len(shape) == 2:
    return _orthogonal(key, shape, dtype)
  heads, d, gates, _ = shape
  keys = jax.random.split(key, heads)
  return jax.vmap(lambda k: _orthogonal(k, (d, gates * d), dtype))(keys).reshape(shape)


def matmul(r, w):
  """r [..., K·d] times w -> [..., G·N]."""
  if w.ndim == 2:
    return r @ w
  heads, d, gates, _ = w.shape
  out = jnp.einsum("...kd,kdge->...gke", r.reshape(*r.shape[:-1], heads, d), w)
  return out.reshape(*r.shape[:-1], gates * heads * d)


def transpose(w):
  """The weight laid out for `matmul_transposed`: wᵀ dense, [K, G, d, d] head-wise."""
  return w.T if w.ndim == 2 else jnp.transpose(w, (0, 2, 3, 1))


def matmul_transposed(dr, wt):
  """dr [..., G·N] times the transpose of w (given as `transpose(w)`) -> [..., K·d]."""
  if wt.ndim == 2:
    return dr @ wt
  heads, gates, d, _ = wt.shape
  dr = dr.reshape(*dr.shape[:-1], gates, heads, d)
  return jnp.einsum("...gke,kged->...kd", dr, wt).reshape(*dr.shape[:-3], heads * d)


def weight_grad(r, dr, shape):
  """Σ over the leading axes of rᵀ·dr, for r [T, B, K·d], dr [T, B, G·N] -> `shape`."""
  if len(shape) == 2:
    return jnp.einsum("tbi,tbj->ij", r, dr)
  heads, d, gates, _ = shape
  r = r.reshape(*r.shape[:-1], heads, d)
  dr = dr.reshape(*dr.shape[:-1], gates, heads, d)
  return jnp.einsum("tbkd,tbgke->kdge", r, dr)
