"""Batch-level Mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019) with label smoothing,
as timm's ``Mixup`` (``timm/data/mixup.py``, mode ``batch``, ``correct_lam``) that the
DeiT/Swin recipes use: soft targets out, one mixing choice per batch."""
import numpy as np
import paddle
import paddle.nn.functional as F

__all__ = ["one_hot_smoothed", "Mixup"]


def one_hot_smoothed(labels, num_classes, smoothing=0.0):
    """``[B]`` int labels -> ``[B, num_classes]`` float targets with label smoothing."""
    off = smoothing / num_classes
    return F.one_hot(labels.astype("int64"), num_classes) * (1.0 - smoothing) + off


class Mixup:
    """Mix a batch with its reverse: Mixup with ``lam ~ Beta(mixup_alpha)`` or CutMix with
    a box of area ``1 - lam``, ``lam ~ Beta(cutmix_alpha)``; ``switch_prob`` picks CutMix
    when both are on; the whole batch is mixed with probability ``prob``.

    Each image is mixed with its mirror in the batch (``flip(0)``), so the batch size
    must be even (timm asserts it). Targets: ``off = smoothing / num_classes``, ``on =
    1 - smoothing + off``. The CutMix box is square in proportion (sides ``sqrt(1 - lam)``
    of the image's), centred uniformly, clipped at the border, and ``lam`` is corrected
    to the area actually pasted.

    Returns ``(images, soft_targets)``. Draws come from its own generator ``rng``:
    paddle's loader decodes batches in a background thread that draws from numpy's
    global one at the same time, so sharing it would make runs irreproducible.
    """

    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                 switch_prob=0.5, label_smoothing=0.1, seed=0):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("Mixup needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.rng = np.random.RandomState(seed)

    def _choose(self):
        """-> (lam, use_cutmix)."""
        if self.rng.rand() >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or self.rng.rand() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), use_cutmix

    def cutmix_box(self, height, width, lam):
        """Random box of area ``(1 - lam) * H * W`` (clipped at the border):
        -> (top, bottom, left, right)."""
        cut = np.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        center_y, center_x = self.rng.randint(height), self.rng.randint(width)
        top, bottom = np.clip([center_y - cut_h // 2, center_y + cut_h // 2], 0, height)
        left, right = np.clip([center_x - cut_w // 2, center_x + cut_w // 2], 0, width)
        return int(top), int(bottom), int(left), int(right)

    def __call__(self, images, labels, token_targets=None):
        """-> ``(images, targets)``; with ``token_targets`` (``[B, K, h, w]``, the
        token-labeling targets of the stage-4 grid) ``(images, targets, token_targets)``,
        the token targets mixed as the pixels under each token: Mixup by ``lam``, CutMix
        by the fraction of the token's pixels inside the box."""
        if images.shape[0] % 2:
            raise ValueError(f"Mixup mixes each image with its mirror in the batch, so the "
                             f"batch size must be even, got {images.shape[0]}")
        targets = one_hot_smoothed(labels, self.num_classes, self.label_smoothing)
        dense = token_targets is not None
        lam, use_cutmix = self._choose()
        if lam == 1.0:
            return (images, targets, token_targets) if dense else (images, targets)
        flipped = images.flip(axis=[0])
        if use_cutmix:
            height, width = images.shape[2], images.shape[3]
            top, bottom, left, right = self.cutmix_box(height, width, lam)
            mask = np.zeros([1, 1, height, width], "float32")
            mask[..., top:bottom, left:right] = 1.0
            if dense:
                grid_h, grid_w = token_targets.shape[2], token_targets.shape[3]
                token_mask = mask.reshape(grid_h, height // grid_h, grid_w,
                                          width // grid_w).mean(axis=(1, 3))
                token_mask = paddle.to_tensor(token_mask[None, None], dtype=token_targets.dtype)
            mask = paddle.to_tensor(mask, dtype=images.dtype)
            images = images * (1.0 - mask) + flipped * mask
            # the label weight follows the area actually pasted
            lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
        else:
            images = images * lam + flipped * (1.0 - lam)
            token_mask = 1.0 - lam
        targets = targets * lam + targets.flip(axis=[0]) * (1.0 - lam)
        if not dense:
            return images, targets
        token_targets = (token_targets * (1.0 - token_mask)
                         + token_targets.flip(axis=[0]) * token_mask)
        return images, targets, token_targets
