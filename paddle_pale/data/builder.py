"""Data sets and loaders from the ``DataLoader.Train`` / ``DataLoader.Eval`` config."""
import ctypes
import functools
import logging
import os
import signal
import sys

import paddle.distributed as dist
from paddle.io import DataLoader, DistributedBatchSampler

from .datasets import ImageFolderDataset, ImageListDataset
from .demo import DIGITS_SPLITS, write_digits_folder
from .token_labels import LabelMaps, TokenLabelDataset, TokenLabelTransform, token_grid
from .train_transforms import build_train_transform
from .transforms import build_eval_transform

__all__ = ["build_dataset", "build_dataloader", "make_loader", "batch_bytes",
           "shared_memory_status", "prepare_generated_data", "worker_init_fn", "SHM_DIR"]

logger = logging.getLogger("paddle_pale")

SHM_DIR = "/dev/shm"
# batches in flight per worker (paddle.io.DataLoader's prefetch_factor default)
PREFETCH_FACTOR = 2

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
    """``mode`` is ``"Train"`` or ``"Eval"``; returns a ClassificationDataset. Training
    images come out augmented as uint8, to be normalized and erased per batch on the
    device (:class:`~paddle_pale.data.train_transforms.BatchNormalize`); evaluation
    images come out normalized float32.

    ``classes``: the class names of the trained model (index = label), through which an
    image folder's class folders are mapped; None numbers the split's own folders."""
    dataset_cfg = loader_cfg["dataset"]
    if not dataset_cfg.get("root"):
        raise ValueError(f"DataLoader.{mode}.dataset.root is not set "
                         f"(e.g. -o DataLoader.{mode}.dataset.root=/data/imagenet/"
                         f"{'train' if mode == 'Train' else 'val'})")
    prepare_generated_data(dataset_cfg)
    if mode == "Train":
        transform = build_train_transform(**loader_cfg["transforms"], on_device=True)
        on_error = "replace"
    else:
        transform = build_eval_transform(**loader_cfg["transforms"])
        on_error = "mask"
    if dataset_cfg["name"] == "ImageFolder":
        dataset = ImageFolderDataset(dataset_cfg["root"], transform, on_error, classes=classes)
    else:
        dataset = ImageListDataset(dataset_cfg["root"], dataset_cfg["list_file"], transform,
                                   on_error, classes=classes)
    if mode == "Train" and dataset_cfg.get("label_maps"):
        # token labeling: the maps travel with the images through crop and flip
        label_maps = LabelMaps(dataset_cfg["label_maps"])
        transform = TokenLabelTransform(label_maps.num_classes, **loader_cfg["transforms"])
        dataset = TokenLabelDataset(dataset, label_maps, transform, dataset_cfg["root"] or "")
    return dataset


def shared_memory_status(batch_bytes, num_workers, shm_dir=SHM_DIR):
    """Whether loader workers may hand batches over through shared memory:
    -> ``(ok, reason)``. It needs ``shm_dir`` (a tmpfs) with room for the batches in
    flight, ``num_workers * PREFETCH_FACTOR + 2`` of ``batch_bytes``; a container's
    default 64 MB ``/dev/shm`` is too small for ImageNet batches, and running out of it
    kills the workers with a bus error."""
    if num_workers == 0:
        return False, "no worker processes (num_workers: 0)"
    needed = (num_workers * PREFETCH_FACTOR + 2) * batch_bytes
    try:
        stat = os.statvfs(shm_dir)
    except OSError as error:
        return False, f"{shm_dir} is not usable ({error.strerror})"
    free = stat.f_bavail * stat.f_frsize
    if free < needed:
        return False, (f"{shm_dir} has {free / 2**20:.0f} MiB free, {num_workers} worker(s) "
                       f"need about {needed / 2**20:.0f} MiB for their batches in flight")
    return True, f"{shm_dir}: {free / 2**20:.0f} MiB free, about {needed / 2**20:.0f} needed"


def make_loader(dataset, mode, num_workers, batch_bytes, **kwargs):
    """``paddle.io.DataLoader`` with workers that end with this process and shared
    memory on where :func:`shared_memory_status` allows it; when it does not, a warning
    says why and how to give it room (batches then travel through pipes, slower)."""
    shared, reason = shared_memory_status(batch_bytes, num_workers)
    if not shared and num_workers > 0:
        logger.warning("DataLoader.%s: shared memory off (%s); batches go through pipes, "
                       "slower. Give %s more room (docker run --shm-size=8g) or lower "
                       "num_workers / batch_size", mode, reason, SHM_DIR)
    return DataLoader(dataset, num_workers=num_workers, use_shared_memory=shared,
                      worker_init_fn=worker_init_fn(), **kwargs)


def batch_bytes(loader_cfg, mode, batch_size=None):
    """Bytes of one batch of images as the workers ship it (uint8 for training,
    float32 for evaluation), with the token-labeling targets when there are label maps."""
    size = loader_cfg["transforms"]["input_size"]
    per_image = 3 * size * size * (1 if mode == "Train" else 4)
    label_maps = loader_cfg["dataset"].get("label_maps")
    if mode == "Train" and label_maps:  # float32 token targets [K, S/32, S/32]
        per_image += 4 * LabelMaps(label_maps).num_classes * token_grid(size) ** 2
    return per_image * (batch_size or loader_cfg["batch_size"])


def build_dataloader(loader_cfg, mode, dataset=None):
    """Loader over this rank's shard; ``DistributedBatchSampler`` also for one process,
    so shuffling depends only on the epoch (``batch_sampler.set_epoch``)."""
    dataset = dataset or build_dataset(loader_cfg, mode)
    training = mode == "Train"
    sampler = DistributedBatchSampler(dataset, batch_size=loader_cfg["batch_size"],
                                      shuffle=training, drop_last=training)
    return make_loader(dataset, mode, loader_cfg["num_workers"],
                       batch_bytes(loader_cfg, mode), batch_sampler=sampler)
