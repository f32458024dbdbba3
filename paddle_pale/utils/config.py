"""Training configuration: YAML with a ``_base_`` include, ``-o`` overrides and a schema.

A config is a nested dict with the PaddleClas sections (``Global``, ``AMP``, ``EMA``,
``Arch``, ``Loss``, ``Optimizer``, ``DataLoader``, ``Metric``). :data:`SCHEMA` holds
every known key with its default; a key or section it does not know is an error that
lists the valid ones, so a typo is never silently ignored. ``Arch`` holds the variant
``name`` plus keyword arguments of :class:`~paddle_pale.models.pale.PaleTransformer`.
"""
import copy
import inspect
import os

import yaml

__all__ = ["ConfigError", "SCHEMA", "load_config", "parse_override", "apply_overrides",
           "validate_config", "dump_config"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Every known key with its default. A dict value is a subsection (it may be set to
# null in a config to switch an optional feature off); anything else is a leaf.
SCHEMA = {
    "Global": {
        "epochs": 300,
        "output_dir": "output",
        "seed": 0,
        "device": "auto",            # auto | cpu | gpu
        "eval_interval": 1,          # epochs between validations
        "save_interval": 1,          # epochs between writes of `latest`
        "print_interval": 20,        # iterations between log lines
        "accum_steps": 1,            # gradient accumulation: optimizer step every N batches
        "resume": None,              # checkpoint prefix, e.g. output/latest
        "pretrained": None,          # weights path or prefix (load_pretrained)
        "use_visualdl": True,        # scalars to output_dir/vdl when visualdl is installed
    },
    "AMP": {
        "enable": False,
        "dtype": "float16",          # float16 | bfloat16
        "level": "O1",               # O1 | O2
        "init_loss_scaling": 65536.0,
    },
    "EMA": {
        "enable": False,
        "decay": 0.9999,
    },
    "Arch": {"name": "pale_t"},      # + PaleTransformer keyword arguments
    "Loss": {
        "label_smoothing": 0.1,
    },
    "Optimizer": {
        "name": "AdamW",
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "weight_decay": 0.05,
        "no_decay_norm_and_bias": True,
        "grad_clip": None,           # max global gradient norm, or null
        "lr": {
            "name": "Cosine",        # Cosine | Constant
            "base_lr": 1e-3,         # for `reference_batch` images; scaled linearly
            "reference_batch": 1024,
            "warmup_epochs": 20,
            "warmup_start_lr": 1e-6,
            "min_lr": 1e-5,
        },
    },
    "DataLoader": {
        "Train": {
            "dataset": {
                "name": "ImageFolder",   # ImageFolder | ImageList
                "root": None,            # ImageFolder: class folders; ImageList: path prefix
                "list_file": None,       # ImageList: lines "relative/path label"
                "generate": None,        # sklearn_digits: write the demo data set to root
            },
            "transforms": {
                "input_size": 224,
                "scale": [0.08, 1.0],
                "ratio": [0.75, 1.3333333],
                "interpolation": "bicubic",
                "hflip": 0.5,
                "randaugment": {
                    "num_ops": 2,
                    "magnitude": 9,
                    "magnitude_std": 0.5,
                },
                "random_erasing": 0.25,
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
            },
            "mixup": {
                "mixup_alpha": 0.8,
                "cutmix_alpha": 1.0,
                "prob": 1.0,
                "switch_prob": 0.5,
            },
            "batch_size": 128,           # per device
            "num_workers": 4,
        },
        "Eval": {
            "dataset": {
                "name": "ImageFolder",
                "root": None,
                "list_file": None,
                "generate": None,
            },
            "transforms": {
                "input_size": 224,
                "crop_pct": 0.875,
                "interpolation": "bicubic",
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
            },
            "batch_size": 128,
            "num_workers": 4,
        },
    },
    "Metric": {
        "topk": [1, 5],
    },
}

CHOICES = {
    ("Global", "device"): ("auto", "cpu", "gpu"),
    ("AMP", "dtype"): ("float16", "bfloat16"),
    ("AMP", "level"): ("O1", "O2"),
    ("Optimizer", "name"): ("AdamW",),
    ("Optimizer", "lr", "name"): ("Cosine", "Constant"),
    ("DataLoader", "Train", "dataset", "name"): ("ImageFolder", "ImageList"),
    ("DataLoader", "Eval", "dataset", "name"): ("ImageFolder", "ImageList"),
    ("DataLoader", "Train", "dataset", "generate"): (None, "sklearn_digits"),
    ("DataLoader", "Eval", "dataset", "generate"): (None, "sklearn_digits"),
}


class ConfigError(ValueError):
    """A config file, key or value that cannot be used."""


def _merge(base, update):
    """Recursive dict merge; ``update`` wins, sections are merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path, seen=()):
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    if path in seen:
        raise ConfigError(f"_base_ include cycle: {' -> '.join(seen + (path,))}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"cannot parse {path!r}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path!r} must hold a mapping of sections, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        merged = _merge(merged, _read_yaml(base_path, seen + (path,)))
    return _merge(merged, data)


def _arch_keys():
    from ..models.pale import PaleTransformer
    params = inspect.signature(PaleTransformer.__init__).parameters
    return ["name"] + [name for name in params if name != "self"]


def _check_section(values, schema, where):
    if not isinstance(values, dict):
        raise ConfigError(f"{'.'.join(where)} must be a mapping, got {values!r}")
    for key, value in values.items():
        path = where + (key,)
        dotted = ".".join(path)
        if path == ("Arch",):
            continue
        if key not in schema:
            raise ConfigError(f"unknown config key {dotted!r}; valid keys of "
                              f"{'.'.join(where) or 'the config'}: {', '.join(schema)}")
        if path in CHOICES and value not in CHOICES[path]:
            raise ConfigError(f"{dotted} must be one of {list(CHOICES[path])}, got {value!r}")
        default = schema[key]
        if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(
                value, str):
            # YAML 1.1 reads "2e-3" (no dot) as a string; a number is meant
            try:
                values[key] = value = float(value)
            except ValueError:
                raise ConfigError(f"{dotted} must be a number, got {value!r}") from None
        if isinstance(schema[key], dict) and value is not None:
            _check_section(value, schema[key], path)
        elif not isinstance(schema[key], dict) and isinstance(value, dict):
            raise ConfigError(f"{dotted} is a value, not a section; got {value!r}")


def _check_arch(arch):
    from ..models.registry import list_models
    if not isinstance(arch, dict) or "name" not in arch:
        raise ConfigError(f"Arch must be a mapping with a 'name' (one of {list_models()}), "
                          f"got {arch!r}")
    if arch["name"] not in list_models():
        raise ConfigError(f"Arch.name must be one of {list_models()}, got {arch['name']!r}")
    valid = _arch_keys()
    for key in arch:
        if key not in valid:
            raise ConfigError(f"unknown config key 'Arch.{key}'; valid keys of Arch: "
                              f"{', '.join(valid)}")


def validate_config(config):
    """Raise :class:`ConfigError` on any unknown section/key or a value outside its choices
    (and turn numbers YAML read as strings, like ``2e-3``, into floats)."""
    _check_section(config, SCHEMA, ())
    _check_arch(config.get("Arch"))
    global_ = config["Global"]
    for key in ("epochs", "eval_interval", "save_interval", "print_interval", "accum_steps"):
        if not isinstance(global_[key], int) or global_[key] < 1:
            raise ConfigError(f"Global.{key} must be a positive integer, got {global_[key]!r}")
    topk = config["Metric"]["topk"]
    if not isinstance(topk, list) or 1 not in topk or not all(
            isinstance(k, int) and k > 0 for k in topk):
        raise ConfigError(f"Metric.topk must be a list of positive ints including 1, got {topk!r}")
    for mode in ("Train", "Eval"):
        dataset = config["DataLoader"][mode]["dataset"]
        if not dataset.get("root"):
            continue  # a config may leave data to the command line (-o ...root=...)
        if dataset["name"] == "ImageList" and not dataset.get("list_file"):
            raise ConfigError(f"DataLoader.{mode}.dataset: ImageList needs list_file")


def parse_override(text):
    """``'Section.key=value'`` -> ``(['Section', 'key'], value)``; value via yaml.safe_load."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like Section.key=value")
    dotted, raw = text.split("=", 1)
    keys = [k for k in dotted.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override {text!r} has an empty key in {dotted!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: cannot parse value {raw!r}: {error}") from error
    return keys, value


def apply_overrides(config, overrides):
    """Apply ``-o`` strings in order; the key path must exist in the schema (or Arch)."""
    config = copy.deepcopy(config)
    for text in overrides or ():
        keys, value = parse_override(text)
        node, schema = config, SCHEMA
        for depth, key in enumerate(keys[:-1]):
            in_arch = depth == 0 and key == "Arch"
            if not in_arch and (not isinstance(schema, dict) or key not in schema
                                or not isinstance(schema[key], dict)):
                valid = ", ".join(k for k, v in schema.items() if isinstance(v, dict))
                raise ConfigError(f"override {text!r}: {'.'.join(keys[:depth + 1])!r} is "
                                  f"not a config section; sections here: {valid}")
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node, schema = node[key], (None if in_arch else schema[key])
        if schema is not None and keys[-1] not in schema:
            raise ConfigError(f"unknown config key {'.'.join(keys)!r} in override {text!r}; "
                              f"valid keys of {'.'.join(keys[:-1]) or 'the config'}: "
                              f"{', '.join(schema)}")
        node[keys[-1]] = value
    return config


def load_config(path, overrides=None):
    """Read ``path`` (with its ``_base_`` files), apply ``overrides``, fill defaults,
    validate; returns a plain nested dict."""
    user = apply_overrides(_read_yaml(path), overrides)
    # validate what the user wrote before defaults hide a misplaced key
    _check_section(user, SCHEMA, ())
    config = _merge(SCHEMA, user)
    # a user's Arch replaces the default one (its kwargs are not merged with another arch)
    config["Arch"] = copy.deepcopy(user.get("Arch", SCHEMA["Arch"]))
    validate_config(config)
    return config


def dump_config(config):
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
