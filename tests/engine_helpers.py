"""Tiny data sets and configs for the training tests (a few seconds each on CPU)."""
import os

import numpy as np
import yaml
from PIL import Image

TINY_ARCH = {"name": "pale_t", "num_classes": 3, "embed_dims": [8, 16, 16, 16],
             "depths": [1, 1, 1, 1], "num_heads": [2, 2, 2, 2], "pale_size": 2}


def write_image_folder(root, num_classes=3, per_class=8, size=16, seed=0):
    """Class ``c`` images are noise around a class-specific colour: learnable in a few
    steps. Returns the list of (relative path, label)."""
    rng = np.random.RandomState(seed)
    colours = rng.randint(0, 256, size=(num_classes, 3))
    samples = []
    for label in range(num_classes):
        folder = os.path.join(root, f"class_{label}")
        os.makedirs(folder, exist_ok=True)
        for index in range(per_class):
            noise = rng.randint(-40, 40, size=(size, size, 3))
            pixels = np.clip(colours[label] + noise, 0, 255).astype("uint8")
            name = f"img_{index}.JPEG"
            Image.fromarray(pixels).save(os.path.join(folder, name), format="JPEG")
            samples.append((os.path.join(f"class_{label}", name), label))
    return samples


def tiny_config(tmp_path, data_root, **sections):
    """Write a config (a `_base_` file + a child) and return its path; ``sections``
    are merged into the child."""
    base = {
        "Global": {"epochs": 2, "output_dir": str(tmp_path / "out"), "seed": 3,
                   "device": "cpu", "print_interval": 1, "use_visualdl": False},
        "Arch": dict(TINY_ARCH),
        "Optimizer": {"grad_clip": 5.0, "lr": {"base_lr": 5e-3, "reference_batch": 8,
                                               "warmup_epochs": 0}},
        "DataLoader": {
            "Train": {"dataset": {"root": str(data_root)},
                      "transforms": {"input_size": 16, "scale": [0.5, 1.0],
                                     "randaugment": None, "random_erasing": 0.0,
                                     "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
                      "mixup": None, "batch_size": 4, "num_workers": 0},
            "Eval": {"dataset": {"root": str(data_root)},
                     "transforms": {"input_size": 16, "crop_pct": 1.0,
                                    "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
                     "batch_size": 8, "num_workers": 0},
        },
        "Metric": {"topk": [1, 2]},
    }
    base_path = tmp_path / "base.yaml"
    base_path.write_text(yaml.safe_dump(base))
    child = {"_base_": "base.yaml", **sections}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(child))
    return str(path)
