"""PaddleSeg configs: reading one, and checking its data sets before PaddleSeg builds them."""
import os

from paddleseg.cvlibs import Config

from . import paddleseg as _registration  # noqa: F401  registers PaleTransformer

__all__ = ["load_config", "check_datasets"]


# sub-folders PaddleSeg's ADE20K reads, per mode
_ADE20K_FOLDERS = {"train": ("images/training", "annotations/training"),
                   "val": ("images/validation", "annotations/validation")}


def load_config(path, opts=None, iters=None, batch_size=None, learning_rate=None):
    """Read a PaddleSeg YAML config; ``opts`` are ``key.sub=value`` overrides."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file at {path!r}")
    if not path.endswith((".yml", ".yaml")):
        raise ValueError(f"PaddleSeg configs are YAML files ending in .yml/.yaml, got {path!r}")
    return Config(path, opts=opts, iters=iters, batch_size=batch_size,
                  learning_rate=learning_rate)


def check_datasets(config, keys):
    """Fail before PaddleSeg builds a data set whose files are not there: ADE20K, VOC
    and other PaddleSeg data sets download themselves into a ``dataset_root`` that does
    not exist (or the default one when it is unset) instead of failing.

    ``keys``: ``"train_dataset"`` and/or ``"val_dataset"``; FileNotFoundError naming the
    config key and what is missing."""
    for key in keys:
        dataset = getattr(config, f"{key}_cfg", None) or {}
        if not dataset:
            continue  # PaddleSeg reports a missing section itself
        root = dataset.get("dataset_root")
        option = f"--opts {key}.dataset_root=PATH"
        if not root:
            raise FileNotFoundError(f"{key}.dataset_root is not set (PaddleSeg would download "
                                    f"{dataset.get('type', 'the data set')} to its cache); "
                                    f"set it in the config or with {option}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{key}.dataset_root {root!r} is not a directory (PaddleSeg "
                                    f"would try to download {dataset.get('type', 'the data')} "
                                    f"there); set {option}")
        if dataset.get("type") == "ADE20K":
            mode = str(dataset.get("mode", "train")).lower()
            for folder in _ADE20K_FOLDERS.get(mode, ()):
                if not os.path.isdir(os.path.join(root, folder)):
                    raise FileNotFoundError(
                        f"{key}.dataset_root {root!r} has no {folder}/ (the ADE20K layout: "
                        f"ADEChallengeData2016/images/{{training,validation}}, "
                        f"annotations/{{training,validation}})")
