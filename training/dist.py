"""Several training processes: rank 0 decides, every rank applies (``training/trainer.py``).

The curriculum's state (the item sampler, VCRL's memory bank and κ step, AdaCuRL's
buckets and capability score, Re-AdaCuRL's pass) lives on every process, but only rank 0's
copy decides and is checkpointed: each decision is computed on rank 0 from rewards that TRL
has already gathered over all processes, and its result (item ids, dropped groups, refill
ids, merge events, metrics) is broadcast with ``accelerate.utils.broadcast_object_list``.
Other ranks apply the result (bind their slice of the rows, splice, reset their reference
model at a merge) and never write to the pool, the logs or the curriculum state.

What is covered, module-level and tested directly (``tests/test_trainer_multiprocess.py``):

- :func:`decide` — run a function on rank 0 and hand its result to every rank; an
  exception on rank 0 reaches the other ranks as a ``RuntimeError`` naming it, instead of
  leaving them blocked in the broadcast.
- :func:`pad_groups` — TRL splits a batch evenly over the processes, so a re-roll of ``n``
  groups (a VCRL refill, a Re-AdaCuRL or drop-in difficulty measurement) is padded with
  repeats of its last id until ``n·G`` is a multiple of the process count; the padding
  groups are rolled out and then ignored.
- :func:`gather_batch` — every process's rows of a TRL batch dict, concatenated in process
  order (prompts left-padded, completions right-padded to the widest process), so that a
  refill group can be spliced into the rows of whichever process holds the group it
  replaces.
- :func:`recount_tokens` — TRL's ``num_items_in_batch`` (loss tokens over all processes).

Not covered: several machines with separate file systems (rank 0's pool is read by every
rank at start-up), and DeepSpeed ZeRO-3 / FSDP sharded reference models (the reference
reset copies whole parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from teachloop.training.batch import _LEFT_PADDED, _RIGHT_PADDED, _SCALAR

__all__ = ["decide", "gather_batch", "pad_groups", "recount_tokens"]

T = TypeVar("T")


def decide(accelerator, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` computed on rank 0 only and broadcast to every rank (one process: a call)."""
    if accelerator.num_processes == 1:
        return fn(*args)
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    error: BaseException | None = None
    if accelerator.is_main_process:
        try:
            box[0] = ("ok", fn(*args))
        except Exception as e:  # every rank must leave the broadcast
            error = e
            box[0] = ("error", f"{type(e).__name__}: {e}")
    broadcast_object_list(box, from_process=0)
    status, value = box[0]
    if status == "error":
        if error is not None:
            raise error
        raise RuntimeError(f"rank 0 failed while deciding the curriculum: {value}")
    return value


def pad_groups(ids: Sequence[Any], G: int, num_processes: int) -> list[Any]:
    """``ids`` with its last id repeated until ``len·G`` divides evenly over the processes."""
    out = list(ids)
    if not out:
        raise ValueError("nothing to roll out")
    while (len(out) * G) % num_processes:
        out.append(out[-1])
    return out


def gather_batch(out: dict[str, Any], accelerator, pad_token_id: int) -> dict[str, Any]:
    """The whole batch: each process's rows of ``out`` gathered in process order."""
    if accelerator.num_processes == 1:
        return out
    res: dict[str, Any] = {}
    for key, t in out.items():
        if key in _SCALAR or not isinstance(t, torch.Tensor):
            res[key] = t
            continue
        if t.dim() >= 2 and (key in _LEFT_PADDED or key in _RIGHT_PADDED):
            value = pad_token_id if key in ("prompt_ids", "completion_ids") else \
                (1 if key == "tool_mask" else 0)
            t = accelerator.pad_across_processes(t, dim=1, pad_index=value,
                                                 pad_first=key in _LEFT_PADDED)
        res[key] = accelerator.gather(t.contiguous())
    return res


def recount_tokens(out: dict[str, Any], accelerator) -> None:
    """Set ``num_items_in_batch`` to the loss tokens over all processes, as TRL counts it."""
    cm = out["completion_mask"]
    loss_mask = cm * out["tool_mask"] if "tool_mask" in out else cm
    total = accelerator.gather(loss_mask.sum()).sum() if accelerator.num_processes > 1 \
        else loss_mask.sum()
    out["num_items_in_batch"] = total.to(out["num_items_in_batch"].dtype)
