"""Batch surgery on TRL 1.16's batch dict for the curriculum trainer (``training/trainer.py``).

Module-level functions, tested directly (``tests/test_trainer.py``): VCRL's splice of
re-rolled groups into a batch, removal of whole groups from the loss, AdaCuRL's per-row
sparse-KL weight and the :class:`RowBeta` that applies it inside TRL's loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

# Keys of TRL 1.16's text-only batch dict, by how a row is padded; the VCRL splice knows
# these and refuses any other key (multimodal keys, or a TRL change).
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_RIGHT_PADDED = ("completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps",
                 "sampling_per_token_logps", "importance_sampling_ratio", "tool_mask")
_PER_ROW = ("advantages",)
_SCALAR = ("num_items_in_batch",)
SPLICE_KEYS = frozenset(_LEFT_PADDED + _RIGHT_PADDED + _PER_ROW + _SCALAR)


# --- batch surgery (module level: tested directly) -----------------------------------

def _varies(values: Sequence[float], tol: float = 1e-6) -> bool:
    """Whether a group's rewards are not all equal (NaN-free input)."""
    return bool(values) and (max(values) - min(values)) > tol


def _pad_to(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    if t.dim() < 2 or t.shape[1] >= width:
        return t
    pad = t.new_full((t.shape[0], width - t.shape[1]), value)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def splice_groups(out: dict[str, Any], new: dict[str, Any], dst_groups: Sequence[int], G: int,
                  pad_token_id: int, start: int = 0) -> dict[str, Any]:
    """``out`` with group ``dst_groups[k]`` replaced by group ``k`` of ``new``.

    Both are TRL 1.16 batch dicts; global rows ``g*G .. g*G+G-1`` are group ``g``. ``new``
    holds every row of the refill batch (several processes: ``training/dist.gather_batch``);
    ``out`` holds this process's rows, global rows ``start .. start+len−1`` (one process:
    all of them, ``start = 0``). Prompts stay left-padded, completions right-padded, to the
    wider of the two; ``num_items_in_batch`` is recounted from this process's masks (the
    trainer recounts over all processes). A key outside
    :data:`SPLICE_KEYS`, or present in one dict only, raises: TRL changed, or a multimodal
    batch reached a text-only splice.
    """
    unknown = (set(out) | set(new)) - SPLICE_KEYS
    if unknown:
        raise RuntimeError(f"cannot splice TRL batch keys {sorted(unknown)}: not a text-only TRL "
                           "1.16 batch (TRL version changed, or a multimodal batch)")
    if set(out) != set(new):
        raise RuntimeError(f"the refill batch has keys {sorted(new)}, the batch {sorted(out)}")
    n_rows = out["prompt_ids"].shape[0]
    from_new = torch.zeros(n_rows, dtype=torch.bool)
    new_rows = torch.zeros(n_rows, dtype=torch.long)
    for k, g in enumerate(dst_groups):
        for j in range(G):
            r = g * G + j - start
            if 0 <= r < n_rows:
                from_new[r] = True
                new_rows[r] = k * G + j
    res: dict[str, Any] = {}
    for key, a in out.items():
        b = new[key]
        if key in _SCALAR:
            continue
        if key in _LEFT_PADDED or key in _RIGHT_PADDED:
            left = key in _LEFT_PADDED
            value = pad_token_id if key in ("prompt_ids", "completion_ids") else \
                (1 if key == "tool_mask" else 0)
            width = max(a.shape[1], b.shape[1]) if a.dim() == 2 else 0
            a, b = _pad_to(a, width, value, left), _pad_to(b, width, value, left)
        b = b.to(a.device)
        merged = a.clone()
        idx = from_new.nonzero(as_tuple=True)[0].to(a.device)
        merged[idx] = b[new_rows[from_new].to(a.device)]
        res[key] = merged
    loss_mask = res["completion_mask"] * res["tool_mask"] if "tool_mask" in res else res["completion_mask"]
    res["num_items_in_batch"] = loss_mask.sum().to(out["num_items_in_batch"].dtype)
    return res


def mask_groups(out: dict[str, Any], groups: Sequence[int], G: int, start: int, accelerator) -> None:
    """Remove whole groups (global group indices) from the loss, in place: their rows'
    ``completion_mask`` becomes 0 on this process's slice starting at global row ``start``,
    and ``num_items_in_batch`` is recounted over all processes, as TRL counts it."""
    cm = out["completion_mask"]
    local = cm.shape[0]
    for g in groups:
        for r in range(g * G, g * G + G):
            if start <= r < start + local:
                cm[r - start] = 0
    loss_mask = cm * out["tool_mask"] if "tool_mask" in out else cm
    out["num_items_in_batch"] = accelerator.gather(loss_mask.sum()).sum()


KL_WEIGHT_KEY = "kl_weight"  # per-row KL weight the curriculum adds to TRL's batch dict


class RowBeta:
    """``beta`` with a per-row weight: ``RowBeta(beta, w) * t == beta * w[:, None] * t``.

    Stands in for ``GRPOTrainer.beta`` during one loss call (:meth:`CurriculumGRPOTrainer.
    compute_loss`): TRL compares it with 0.0 (``!=`` answers as ``beta`` would) and
    multiplies it into ``per_token_kl`` of shape (rows, tokens). ``applied`` counts the
    products, so a TRL change that stops using it is noticed.
    """

    def __init__(self, beta: float, weight: torch.Tensor) -> None:
        self.beta = float(beta)
        self.weight = weight
        self.applied = 0

    def __eq__(self, other: object) -> bool:
        return self.beta == other

    def __ne__(self, other: object) -> bool:
        return self.beta != other

    __hash__ = None  # type: ignore[assignment]

    def __float__(self) -> float:
        return self.beta

    def __mul__(self, t: torch.Tensor) -> torch.Tensor:
        self.applied += 1
        w = self.weight.to(device=t.device, dtype=t.dtype)
        return self.beta * (w.reshape(-1, *([1] * (t.dim() - 1))) * t)

    __rmul__ = __mul__


def kl_weights(no_kl_groups: Sequence[int], n_groups: int, G: int, start: int, local: int,
               device: Any = None) -> torch.Tensor:
    """This process's rows (global rows ``start .. start+local−1``) of the per-row KL weight:
    0 for the rows of ``no_kl_groups`` (global group indices), 1 elsewhere."""
    w = torch.ones(n_groups * G)
    for g in no_kl_groups:
        w[g * G:(g + 1) * G] = 0.0
    return w[start:start + local].to(device)


def informative_fraction(group_rewards: Sequence[Sequence[float]]) -> float:
    """Fraction of groups whose rewards are not all equal (NaN-free)."""
    return sum(_varies(g) for g in group_rewards) / len(group_rewards) if group_rewards else math.nan
