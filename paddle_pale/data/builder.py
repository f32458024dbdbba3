"""Data sets and loaders from the ``DataLoader.Train`` / ``DataLoader.Eval`` config."""
import ctypes
import functools
import os
import signal
import sys

import paddle.distributed as dist
from paddle.io import DataLoader, DistributedBatchSampler

from .datasets import ImageFolderDataset, ImageListDataset
from .demo import DIGITS_SPLITS, write_digits_folder
from .train_transforms import build_train_transform
from .transforms import build_eval_transform

__all__ = ["build_dataset", "build_dataloader", "prepare_generated_data", "worker_init_fn"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with_parent(parent_pid, worker_id):
    """In a DataLoader worker: have the kernel kill it when the process that started it
    dies. Paddle's own check of the parent runs only between batches, so a worker blocked
    on a full queue outlived a ``kill -9`` of the trainer indefinitely."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def worker_init_fn():
    """``worker_init_fn`` for ``paddle.io.DataLoader``: workers end with this process."""
    return functools.partial(_end_with_parent, os.getpid())


def prepare_generated_data(dataset_cfg):
    """Write a generated data set (``generate: sklearn_digits``) if its root is absent.

    ``root`` must end in ``train`` or ``val``; its parent receives both splits. Rank 0
    writes; the other ranks wait at a barrier.
    """
    if dataset_cfg.get("generate") != "sklearn_digits":
        return
    root = os.path.normpath(dataset_cfg["root"])
    if os.path.basename(root) not in DIGITS_SPLITS:
        raise ValueError(f"generate: sklearn_digits needs a root ending in one of "
                         f"{DIGITS_SPLITS}, got {dataset_cfg['root']!r}")
    if dist.get_rank() == 0 and not os.path.isdir(root):
        write_digits_folder(os.path.dirname(root))
    if dist.get_world_size() > 1:
        dist.barrier()


def build_dataset(loader_cfg, mode, classes=None):
    """``mode`` is ``"Train"`` or ``"Eval"``; returns a ClassificationDataset.

    ``classes``: the class names of the trained model (index = label), through which an
    image folder's class folders are mapped; None numbers the split's own folders."""
    dataset_cfg = loader_cfg["dataset"]
    if not dataset_cfg.get("root"):
        raise ValueError(f"DataLoader.{mode}.dataset.root is not set "
                         f"(e.g. -o DataLoader.{mode}.dataset.root=/data/imagenet/"
                         f"{'train' if mode == 'Train' else 'val'})")
    prepare_generated_data(dataset_cfg)
    if mode == "Train":
        transform = build_train_transform(**loader_cfg["transforms"])
        on_error = "replace"
    else:
        transform = build_eval_transform(**loader_cfg["transforms"])
        on_error = "mask"
    if dataset_cfg["name"] == "ImageFolder":
        return ImageFolderDataset(dataset_cfg["root"], transform, on_error, classes=classes)
    return ImageListDataset(dataset_cfg["root"], dataset_cfg["list_file"], transform, on_error,
                            classes=classes)


def build_dataloader(loader_cfg, mode, dataset=None):
    """Loader over this rank's shard; ``DistributedBatchSampler`` also for one process,
    so shuffling depends only on the epoch (``batch_sampler.set_epoch``)."""
    dataset = dataset or build_dataset(loader_cfg, mode)
    training = mode == "Train"
    sampler = DistributedBatchSampler(dataset, batch_size=loader_cfg["batch_size"],
                                      shuffle=training, drop_last=training)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=loader_cfg["num_workers"],
                      use_shared_memory=False, worker_init_fn=worker_init_fn())
