"""Split-level depth and mask metrics, and constant-prediction baselines.

Depth metrics are computed on the ``[0, 1]`` depth scale of the dataset. AbsRel, log10 and the delta accuracies
need positive depths: both prediction and target are clamped to ``>= eps`` (default ``DEPTH_EPS = 1e-3``, i.e.
0.1 % of the depth range) before those four are computed; RMSE uses the unclamped values.

``EvalMetrics`` (dm-eval) adds a boundary F-score of the mask, depth errors on object and on background pixels, and
depth in metres when the dataset's depth is metric; ``best_diff_threshold`` gives the |fg_bg - bg| threshold floor.

All sums are accumulated in float64 on the tensors' device (no host sync per batch), over every pixel of the
split, so the numbers do not depend on how the split was batched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["BOUNDARY_TOLERANCE_PX", "DEPTH_EPS", "METRIC_KEYS", "BoundaryFScore", "EvalMetrics", "RegionDepthMetrics",
           "SegDepthMetrics", "best_diff_threshold", "constant_baseline", "diff_histograms", "mean_depth"]

DEPTH_EPS = 1e-3
METRIC_KEYS = (
    "depth_rmse",
    "depth_absrel",
    "depth_log10",
    "depth_delta1",
    "depth_delta2",
    "depth_delta3",
    "mask_iou",
    "mask_dice",
    "mask_iou_per_image",
)

# accumulator slots
_SQ, _ABSREL, _LOG10, _D1, _D2, _D3, _NPIX, _INTER, _UNION, _PRED, _TRUE, _IOU_IMG, _NIMG = range(13)
_NUM_SLOTS = 13


def _b1hw(t: Tensor, name: str) -> Tensor:
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"{name} must be (B,1,H,W) or (B,H,W), got shape {tuple(t.shape)}")
    return t.detach()


class SegDepthMetrics:
    """Accumulates over a whole split; ``compute()`` gives dataset-level numbers.

    * ``depth_rmse``: ``sqrt(mean((pred - true)^2))`` over all pixels of the split (depth on ``[0, 1]``).
    * ``depth_absrel``: mean ``|pred - true| / true``; ``depth_log10``: mean ``|log10 pred - log10 true|``;
      ``depth_delta{1,2,3}``: fraction of pixels with ``max(pred/true, true/pred) < 1.25^k``. These four clamp both
      to ``>= eps``.
    * Masks: prediction ``logits > 0``, target ``mask_true > 0.5``. ``mask_iou`` = summed intersection / summed
      union over the split, ``mask_dice`` = 2 * summed intersection / (summed |pred| + summed |true|) (both 1.0
      if the split has no foreground at all in prediction and target); ``mask_iou_per_image`` = mean of the
      per-image IoU, an image with an empty union counting as 1.0.
    """

    def __init__(self, eps: float = DEPTH_EPS) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        self._sums: Tensor | None = None

    def reset(self) -> None:
        self._sums = None

    @property
    def num_images(self) -> int:
        return 0 if self._sums is None else int(self._sums[_NIMG].item())

    @torch.no_grad()
    def update(self, depth_pred: Tensor, depth_true: Tensor, mask_logits: Tensor, mask_true: Tensor) -> None:
        """Add one batch; all four tensors ``(B,1,H,W)`` (or ``(B,H,W)``) of one shape."""
        dp, dt = _b1hw(depth_pred, "depth_pred"), _b1hw(depth_true, "depth_true")
        ml, mt = _b1hw(mask_logits, "mask_logits"), _b1hw(mask_true, "mask_true")
        if not (dp.shape == dt.shape == ml.shape == mt.shape):
            raise ValueError(
                "depth_pred, depth_true, mask_logits, mask_true must share one shape, got "
                f"{tuple(dp.shape)}, {tuple(dt.shape)}, {tuple(ml.shape)}, {tuple(mt.shape)}"
            )
        dp, dt = dp.double(), dt.double()
        sq = (dp - dt).square().sum()
        pc, tc = dp.clamp_min(self.eps), dt.clamp_min(self.eps)
        absrel = ((pc - tc).abs() / tc).sum()
        log10 = (torch.log10(pc) - torch.log10(tc)).abs().sum()
        ratio = torch.maximum(pc / tc, tc / pc)
        d1 = (ratio < 1.25).sum()
        d2 = (ratio < 1.25**2).sum()
        d3 = (ratio < 1.25**3).sum()

        pred = (ml > 0).flatten(1)
        true = (mt > 0.5).flatten(1)
        inter_img = (pred & true).sum(1).double()
        union_img = (pred | true).sum(1).double()
        iou_img = torch.where(union_img > 0, inter_img / union_img.clamp_min(1.0), torch.ones_like(union_img))

        batch = torch.stack(
            [
                sq,
                absrel,
                log10,
                d1.double(),
                d2.double(),
                d3.double(),
                torch.tensor(float(dp.numel()), dtype=torch.float64, device=dp.device),
                inter_img.sum(),
                union_img.sum(),
                pred.sum().double(),
                true.sum().double(),
                iou_img.sum(),
                torch.tensor(float(dp.shape[0]), dtype=torch.float64, device=dp.device),
            ]
        )
        self._sums = batch if self._sums is None else self._sums + batch.to(self._sums.device)

    def state_tensor(self) -> Tensor:
        """The accumulated sums as one float64 vector (zeros before any update), e.g. to all-reduce (sum) across
        distributed ranks and hand back with :meth:`load_state_tensor`. Every slot is a plain sum."""
        if self._sums is None:
            return torch.zeros(_NUM_SLOTS, dtype=torch.float64)
        return self._sums.clone()

    def load_state_tensor(self, sums: Tensor) -> None:
        """Replace the accumulated sums (the output of :meth:`state_tensor`, possibly summed over ranks)."""
        if sums.shape != (_NUM_SLOTS,):
            raise ValueError(f"expected a ({_NUM_SLOTS},) tensor of sums, got shape {tuple(sums.shape)}")
        self._sums = sums.detach().to(torch.float64).clone()

    def compute(self) -> dict[str, float]:
        """Dataset-level metrics (keys ``METRIC_KEYS`` plus ``n_images``); NaNs before any update."""
        if self._sums is None or float(self._sums[_NPIX]) == 0:
            return {**{k: math.nan for k in METRIC_KEYS}, "n_images": 0.0}
        s = self._sums.tolist()
        n = s[_NPIX]
        inter, union, psum, tsum = s[_INTER], s[_UNION], s[_PRED], s[_TRUE]
        return {
            "depth_rmse": math.sqrt(s[_SQ] / n),
            "depth_absrel": s[_ABSREL] / n,
            "depth_log10": s[_LOG10] / n,
            "depth_delta1": s[_D1] / n,
            "depth_delta2": s[_D2] / n,
            "depth_delta3": s[_D3] / n,
            "mask_iou": inter / union if union > 0 else 1.0,
            "mask_dice": 2 * inter / (psum + tsum) if psum + tsum > 0 else 1.0,
            "mask_iou_per_image": s[_IOU_IMG] / s[_NIMG],
            "n_images": s[_NIMG],
        }


def _reiterable(batches: Iterable) -> Iterable:
    if iter(batches) is batches:
        raise ValueError("batches must be re-iterable (a list, a DataLoader ...), not a one-shot iterator")
    return batches


def mean_depth(batches: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Mean target depth over ``(depth_true, mask_true)`` batches (float64 sums); e.g. the train split's mean."""
    total, count = 0.0, 0
    for depth_true, _ in batches:
        total += float(depth_true.detach().double().sum())
        count += depth_true.numel()
    if count == 0:
        raise ValueError("no depth values to average")
    return total / count


def constant_baseline(
    batches: Iterable[tuple[Tensor, Tensor]],
    depth_value: float | None = None,
    *,
    eps: float = DEPTH_EPS,
) -> dict[str, dict[str, float]]:
    """Metrics of constant predictions on a split, the floor any trained model must beat.

    ``batches`` yields ``(depth_true, mask_true)`` pairs ``(B,1,H,W)``. ``depth_value`` is the constant depth
    (pass the *train* split's :func:`mean_depth`); ``None`` uses the mean of ``batches`` itself (needs a
    re-iterable ``batches``: two passes).

    Returns ``{"all_background": m, "all_foreground": m, "best_constant": m}``: metric dicts with depth = the
    constant and mask = all background / all foreground / whichever of the two has the higher ``mask_iou``
    (a threshold-at-0 mask has only those two constant values). Each dict also carries ``depth_constant`` and
    ``mask_constant`` (0.0 or 1.0).
    """
    if depth_value is None:
        batches = _reiterable(batches)
        depth_value = mean_depth(batches)
    return constant_results(*constant_sums(batches, depth_value, eps=eps), depth_value)


def constant_sums(batches: Iterable[tuple[Tensor, Tensor]], depth_value: float, *,
                  eps: float = DEPTH_EPS) -> tuple[SegDepthMetrics, SegDepthMetrics]:
    """The accumulators of `constant_baseline` (all background, all foreground), before `compute`: their sums can
    be all-reduced across ranks first."""
    bg, fg = SegDepthMetrics(eps), SegDepthMetrics(eps)
    for depth_true, mask_true in batches:
        pred = torch.full_like(depth_true, float(depth_value), dtype=torch.float64)
        bg.update(pred, depth_true, torch.full_like(pred, -1.0), mask_true)
        fg.update(pred, depth_true, torch.full_like(pred, 1.0), mask_true)
    return bg, fg


def constant_results(bg: SegDepthMetrics, fg: SegDepthMetrics, depth_value: float) -> dict[str, dict[str, float]]:
    """`constant_baseline`'s answer from its accumulators."""
    out = {
        "all_background": {**bg.compute(), "depth_constant": float(depth_value), "mask_constant": 0.0},
        "all_foreground": {**fg.compute(), "depth_constant": float(depth_value), "mask_constant": 1.0},
    }
    best = max(("all_background", "all_foreground"), key=lambda k: out[k]["mask_iou"])
    out["best_constant"] = dict(out[best])
    return out


# ---- dm-eval: boundary F-score, object / background depth, metric depth -------------------------------------
BOUNDARY_TOLERANCE_PX = 3


def mask_boundary(mask: Tensor) -> Tensor:
    """Boundary pixels of a boolean ``(B,1,H,W)`` mask: mask pixels with a non-mask 8-neighbour (the image's
    border does not count as outside, so a mask touching it has no boundary there)."""
    m = mask.float()
    eroded = -torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)
    return mask & (eroded < 0.5)


def _dilate(mask: Tensor, radius: int) -> Tensor:
    if radius <= 0:
        return mask
    return torch.nn.functional.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0.5


class BoundaryFScore:
    """Mask boundary F-score over a split: a predicted boundary pixel is right if a true boundary pixel lies within
    ``tolerance`` pixels (Chebyshev distance, a square band), and a true one is found if a predicted one does.
    Precision and recall are summed over every image before the ratio, so the figure is dataset-level.
    No boundary in both prediction and target counts as perfect (1.0)."""

    def __init__(self, tolerance: int = BOUNDARY_TOLERANCE_PX) -> None:
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
        self.tolerance = int(tolerance)
        self._sums = torch.zeros(4, dtype=torch.float64)  # pred matched, pred total, true matched, true total

    @torch.no_grad()
    def update(self, mask_pred: Tensor, mask_true: Tensor) -> None:
        """Boolean (or 0/1) masks ``(B,1,H,W)`` of one shape."""
        bp, bt = mask_boundary(_b1hw(mask_pred, "mask_pred") > 0.5), mask_boundary(_b1hw(mask_true, "mask_true") > 0.5)
        near_true, near_pred = _dilate(bt, self.tolerance), _dilate(bp, self.tolerance)
        self._sums += torch.stack([(bp & near_true).sum(), bp.sum(), (bt & near_pred).sum(), bt.sum()]).double().cpu()

    def compute(self) -> dict[str, float]:
        matched_p, total_p, matched_t, total_t = self._sums.tolist()
        if total_p == 0 and total_t == 0:
            return {"mask_boundary_f": 1.0, "mask_boundary_precision": 1.0, "mask_boundary_recall": 1.0}
        precision = matched_p / total_p if total_p else 0.0
        recall = matched_t / total_t if total_t else 0.0
        f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return {"mask_boundary_f": f, "mask_boundary_precision": precision, "mask_boundary_recall": recall}


_REGIONS = ("object", "background", "m")
_R_SQ, _R_ABSREL, _R_D1, _R_D2, _R_D3, _R_N = range(6)


class RegionDepthMetrics:
    """Depth RMSE, AbsRel and delta1-3 on the object's pixels (true mask) and on the background's, on the dataset's
    [0, 1] scale; and, with ``far_m`` (the dataset's depth is ``clip(z / far_m, 0, 1)``), in metres over the pixels
    whose true depth is below the far plane (sky and anything clipped at 1.0 has no metric depth). AbsRel and the
    deltas clamp prediction and target to ``>= eps`` (``eps * far_m`` metres), as ``SegDepthMetrics``."""

    def __init__(self, far_m: float | None = None, eps: float = DEPTH_EPS) -> None:
        self.far_m = float(far_m) if far_m else None
        self.eps = float(eps)
        self._sums = torch.zeros(len(_REGIONS), 6, dtype=torch.float64)

    @staticmethod
    def _region_sums(pred: Tensor, true: Tensor, select: Tensor, eps: float) -> Tensor:
        p, t = pred[select], true[select]
        pc, tc = p.clamp_min(eps), t.clamp_min(eps)
        ratio = torch.maximum(pc / tc, tc / pc)
        return torch.stack([(p - t).square().sum(), ((pc - tc).abs() / tc).sum(), (ratio < 1.25).sum().double(),
                            (ratio < 1.25**2).sum().double(), (ratio < 1.25**3).sum().double(),
                            torch.tensor(float(p.numel()), dtype=torch.float64, device=p.device)])

    @torch.no_grad()
    def update(self, depth_pred: Tensor, depth_true: Tensor, mask_true: Tensor) -> None:
        dp, dt = _b1hw(depth_pred, "depth_pred").double(), _b1hw(depth_true, "depth_true").double()
        obj = _b1hw(mask_true, "mask_true") > 0.5
        rows = [self._region_sums(dp, dt, obj, self.eps), self._region_sums(dp, dt, ~obj, self.eps)]
        if self.far_m is not None:
            rows.append(self._region_sums(dp * self.far_m, dt * self.far_m, dt < 1.0, self.eps * self.far_m))
        else:
            rows.append(torch.zeros(6, dtype=torch.float64, device=dp.device))
        self._sums += torch.stack(rows).cpu()

    def compute(self) -> dict[str, float]:
        out = {}
        for r, region in enumerate(_REGIONS):
            if region == "m" and self.far_m is None:
                continue
            s = self._sums[r].tolist()
            n = s[_R_N]
            values = (math.sqrt(s[_R_SQ] / n), s[_R_ABSREL] / n, s[_R_D1] / n, s[_R_D2] / n, s[_R_D3] / n) if n \
                else (math.nan,) * 5
            for name, value in zip(("rmse", "absrel", "delta1", "delta2", "delta3"), values):
                out[f"depth_{name}_{region}"] = value
            out[f"pixels_{region}"] = n
        return out


class EvalMetrics:
    """Everything dm-eval reports for one predictor on one split: ``SegDepthMetrics`` (what dm-train reports),
    ``BoundaryFScore`` and ``RegionDepthMetrics``, fed from the same batches."""

    def __init__(self, far_m: float | None = None, boundary_tolerance: int = BOUNDARY_TOLERANCE_PX,
                 eps: float = DEPTH_EPS) -> None:
        self.seg_depth = SegDepthMetrics(eps)
        self.boundary = BoundaryFScore(boundary_tolerance)
        self.regions = RegionDepthMetrics(far_m, eps)

    @torch.no_grad()
    def update(self, depth_pred: Tensor, depth_true: Tensor, mask_logits: Tensor, mask_true: Tensor) -> None:
        self.seg_depth.update(depth_pred, depth_true, mask_logits, mask_true)
        self.boundary.update(_b1hw(mask_logits, "mask_logits") > 0, mask_true)
        self.regions.update(depth_pred, depth_true, mask_true)

    def compute(self) -> dict[str, float]:
        return {**self.seg_depth.compute(), **self.boundary.compute(), **self.regions.compute()}


def diff_histograms(diff: Tensor, mask_true: Tensor) -> Tensor:
    """``(2, 256)`` int64 counts of an integer difference image (0..255, e.g. ``max_c |fg_bg - bg|``) over
    background pixels (row 0) and object pixels (row 1)."""
    d = _b1hw(diff, "diff").long().clamp(0, 255)
    obj = _b1hw(mask_true, "mask_true") > 0.5
    return torch.stack([torch.bincount(d[~obj], minlength=256), torch.bincount(d[obj], minlength=256)]).cpu()


def best_diff_threshold(histograms: Tensor) -> tuple[int, float]:
    """(t, IoU): the threshold whose mask ``diff > t`` has the highest split-level IoU given ``diff_histograms``
    summed over a split (exact: every integer threshold is tried); ties go to the lowest t."""
    background, obj = histograms[0].double(), histograms[1].double()
    # pixels with diff > t, for t = 0..255
    fp = background.flip(0).cumsum(0).flip(0)[1:].tolist() + [0.0]
    tp = obj.flip(0).cumsum(0).flip(0)[1:].tolist() + [0.0]
    total_obj = float(obj.sum())
    best_t, best_iou = 0, -1.0
    for t in range(256):
        union = total_obj + fp[t]
        iou = tp[t] / union if union > 0 else 1.0
        if iou > best_iou:
            best_t, best_iou = t, iou
    return best_t, best_iou
