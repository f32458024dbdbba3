"""The training config: what it may hold, its defaults, and the loader.

A config is a nested dict with the PaddleClas sections (``Global``, ``AMP``, ``EMA``,
``Arch``, ``Loss``, ``Optimizer``, ``DataLoader``, ``Metric``). ``defaults.yaml`` beside
this module holds every known key with its default, the one place defaults live; a key
or section it does not know is an error that lists the valid ones, so a typo is never
silently ignored. :data:`RULES` holds the range of every value. ``Arch`` holds the
variant ``name`` plus keyword arguments of
:class:`~paddle_pale.models.pale.PaleTransformer`.
"""
import copy
import math
import os

from ..models.attention import stage_sizes
from ..models.modes import MODES
from ..models.pale import MIN_INPUT_SIZE
from ..utils.config import ConfigError, merge, parse_override, read_yaml

__all__ = ["ConfigError", "DEFAULTS", "RULES", "PATCH_SIZE", "load_config",
           "apply_overrides", "validate_config"]

# Every known key with its default. A dict value is a subsection (it may be set to
# null in a config to switch an optional feature off); anything else is a leaf.
DEFAULTS = read_yaml(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "defaults.yaml"))


def _arch_keys():
    from ..models.registry import model_arguments
    return ["name", *model_arguments()]


# Sections that a config may switch off with null; every other section must be a mapping.
OPTIONAL_SECTIONS = {("EMA",), ("DataLoader", "Train", "transforms", "randaugment"),
                     ("DataLoader", "Train", "mixup")}

# the smallest input side a model can take (the stride of its first patch merging)
PATCH_SIZE = MIN_INPUT_SIZE

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "lanczos", "hamming")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Rule:
    """What one config value may be: ``check(value) -> bool`` and the text an error shows
    (``"KEY must be <allowed>, got VALUE"``). ``numeric`` rules read strings such as
    ``"2e-3"`` (YAML 1.1 leaves an exponent without a dot as text) as numbers.
    ``allowed`` may be a function returning the text (a registry that grows)."""

    def __init__(self, check, allowed, numeric=False, nullable=False):
        self.check = check
        self._allowed = allowed
        self.numeric = numeric
        self.nullable = nullable

    @property
    def allowed(self):
        text = self._allowed() if callable(self._allowed) else self._allowed
        return text + (", or null" if self.nullable else "")

    def accepts(self, value):
        return (value is None and self.nullable) or (value is not None and self.check(value))


def _bounds_text(low, high, low_open, high_open):
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    if low is None:
        return f"{'<' if high_open else '<='} {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _within(value, low, high, low_open, high_open):
    return ((low is None or (value > low if low_open else value >= low))
            and (high is None or (value < high if high_open else value <= high)))


def integer(low=None, high=None, nullable=False):
    return Rule(lambda v: _is_int(v) and _within(v, low, high, False, False),
                f"an integer {_bounds_text(low, high, False, False)}", nullable=nullable)


def number(low=None, high=None, low_open=False, high_open=False, nullable=False):
    return Rule(lambda v: _is_number(v) and _within(v, low, high, low_open, high_open),
                f"a number {_bounds_text(low, high, low_open, high_open)}", numeric=True,
                nullable=nullable)


def boolean():
    return Rule(lambda v: isinstance(v, bool), "true or false")


def choice(options):
    options = list(options)
    return Rule(lambda v: v in options, f"one of {options}")


def path(nullable=True):
    return Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty path",
                nullable=nullable)


def number_list(length, low=None, high=None, low_open=False, high_open=False, ordered=False):
    """A list of ``length`` numbers each within the bounds (``ordered``: non-decreasing)."""
    def check(v):
        return (isinstance(v, (list, tuple)) and len(v) == length
                and all(_is_number(x) and _within(x, low, high, low_open, high_open)
                        for x in v)
                and (not ordered or list(v) == sorted(v)))
    bounds = _bounds_text(low, high, low_open, high_open)
    return Rule(check, f"a list of {length} numbers {bounds}"
                + (", smallest first" if ordered else ""))


def int_list(low=1):
    return Rule(lambda v: isinstance(v, (list, tuple)) and len(v) > 0
                and all(_is_int(x) and x >= low for x in v),
                f"a list of integers >= {low} (one per stage)")


def _is_pale_size(value):
    """An int S >= 1, a pair (s_r, s_c), or a list of those, one per stage."""
    try:
        stage_sizes(value)
        return True
    except ValueError:
        return False


_LOADER_RULES = {
    ("dataset", "name"): choice(("ImageFolder", "ImageList")),
    ("dataset", "root"): path(),
    ("dataset", "list_file"): path(),
    ("dataset", "generate"): Rule(lambda v: v == "sklearn_digits", "'sklearn_digits'",
                                  nullable=True),
    ("transforms", "input_size"): integer(PATCH_SIZE),
    ("transforms", "interpolation"): choice(INTERPOLATIONS),
    ("transforms", "mean"): number_list(3, 0.0, 1.0),
    ("transforms", "std"): number_list(3, 0.0, None, low_open=True),
    ("batch_size",): integer(1),
    ("num_workers",): integer(0),
}

# Every config value: the range it must lie in. tests/test_config.py checks that each key
# of DEFAULTS and of the model's arguments has a rule here.
RULES = {
    ("Global", "epochs"): integer(1),
    ("Global", "output_dir"): path(nullable=False),
    ("Global", "seed"): integer(0),
    ("Global", "device"): choice(("auto", "cpu", "gpu")),
    ("Global", "eval_interval"): integer(1),
    ("Global", "save_interval"): integer(1),
    ("Global", "print_interval"): integer(1),
    ("Global", "accum_steps"): integer(1),
    ("Global", "resume"): path(),
    ("Global", "pretrained"): path(),
    ("Global", "use_visualdl"): boolean(),
    ("Global", "overwrite"): boolean(),
    ("Global", "to_static"): boolean(),
    ("AMP", "enable"): boolean(),
    ("AMP", "dtype"): choice(("float16", "bfloat16")),
    ("AMP", "level"): choice(("O1", "O2")),
    ("AMP", "init_loss_scaling"): number(0.0, None, low_open=True),
    ("EMA", "enable"): boolean(),
    ("EMA", "decay"): number(0.0, 1.0, low_open=True, high_open=True),
    ("Loss", "label_smoothing"): number(0.0, 1.0, high_open=True),
    ("Loss", "token_beta"): number(0.0),
    ("DataLoader", "Train", "dataset", "label_maps"): path(),
    ("DataLoader", "Train", "mix_token", "enable"): boolean(),
    ("DataLoader", "Train", "mix_token", "alpha"): number(0.0, None, low_open=True),
    ("DataLoader", "Train", "mix_token", "prob"): number(0.0, 1.0),
    ("Optimizer", "name"): choice(("AdamW",)),
    ("Optimizer", "beta1"): number(0.0, 1.0, high_open=True),
    ("Optimizer", "beta2"): number(0.0, 1.0, high_open=True),
    ("Optimizer", "epsilon"): number(0.0, None, low_open=True),
    ("Optimizer", "weight_decay"): number(0.0),
    ("Optimizer", "no_decay_norm_and_bias"): boolean(),
    ("Optimizer", "grad_clip"): number(0.0, None, low_open=True, nullable=True),
    ("Optimizer", "layer_decay"): number(0.0, 1.0, low_open=True, nullable=True),
    ("Optimizer", "lr", "name"): choice(("Cosine", "Constant")),
    ("Optimizer", "lr", "base_lr"): number(0.0, None, low_open=True),
    ("Optimizer", "lr", "reference_batch"): integer(1),
    ("Optimizer", "lr", "warmup_epochs"): number(0.0),
    ("Optimizer", "lr", "warmup_start_lr"): number(0.0),
    ("Optimizer", "lr", "min_lr"): number(0.0),
    ("DataLoader", "Train", "transforms", "scale"): number_list(2, 0.0, 1.0, low_open=True,
                                                                 ordered=True),
    ("DataLoader", "Train", "transforms", "ratio"): number_list(2, 0.0, None, low_open=True,
                                                                 ordered=True),
    ("DataLoader", "Train", "transforms", "hflip"): number(0.0, 1.0),
    ("DataLoader", "Train", "transforms", "randaugment", "num_ops"): integer(1),
    ("DataLoader", "Train", "transforms", "randaugment", "magnitude"): number(0.0, 10.0),
    ("DataLoader", "Train", "transforms", "randaugment", "magnitude_std"): number(0.0),
    ("DataLoader", "Train", "transforms", "random_erasing"): number(0.0, 1.0),
    ("DataLoader", "Train", "mixup", "mixup_alpha"): number(0.0),
    ("DataLoader", "Train", "mixup", "cutmix_alpha"): number(0.0),
    ("DataLoader", "Train", "mixup", "prob"): number(0.0, 1.0),
    ("DataLoader", "Train", "mixup", "switch_prob"): number(0.0, 1.0),
    ("DataLoader", "Eval", "transforms", "crop_pct"): number(0.0, 1.0, low_open=True),
    ("Metric", "topk"): Rule(lambda v: isinstance(v, list) and 1 in v and all(
        _is_int(k) and k >= 1 for k in v), "a list of integers >= 1 that includes 1"),
    # model arguments (PaleTransformer); the model checks how they fit together
    ("Arch", "in_channels"): Rule(lambda v: v == 3 and _is_int(v),
                                  "3 (images are decoded as RGB)"),
    ("Arch", "num_classes"): integer(0),
    ("Arch", "embed_dims"): int_list(1),
    ("Arch", "depths"): int_list(1),
    ("Arch", "num_heads"): int_list(1),  # the attention mode checks evenness
    ("Arch", "pale_size"): Rule(_is_pale_size, "a positive integer, a pair [s_r, s_c], or "
                                               "one of those per stage"),
    ("Arch", "mlp_ratio"): number(0.0, None, low_open=True),
    ("Arch", "qkv_bias"): boolean(),
    ("Arch", "drop_rate"): number(0.0, 1.0, high_open=True),
    ("Arch", "drop_path_rate"): number(0.0, 1.0, high_open=True),
    ("Arch", "with_classifier"): Rule(lambda v: v is True, "true (a classifier is trained; "
                                                           "false builds a backbone only)"),
    # the registry itself: a mode registered after this import is valid too
    ("Arch", "attention_mode"): Rule(lambda v: v in MODES, lambda: f"one of {list(MODES)}"),
    ("Arch", "channels_last"): boolean(),
    ("Arch", "stripe_width"): Rule(_is_pale_size, "a positive integer, a pair [w_r, w_c], or "
                                                  "one of those per stage", nullable=True),
    ("Arch", "grad_checkpointing"): boolean(),
    ("Arch", "token_head"): boolean(),
    ("Arch", "token_inference"): boolean(),
}
for _mode in ("Train", "Eval"):
    for _key, _rule in _LOADER_RULES.items():
        RULES[("DataLoader", _mode) + _key] = _rule


def _check_section(values, schema, where):
    """Structure only: every key known, sections are mappings, values are not."""
    if not isinstance(values, dict):
        raise ConfigError(f"{'.'.join(where) or 'the config'} must be a mapping, got {values!r}")
    for key, value in values.items():
        path = where + (key,)
        dotted = ".".join(path)
        if path == ("Arch",):
            continue
        if key not in schema:
            raise ConfigError(f"unknown config key {dotted!r}; valid keys of "
                              f"{'.'.join(where) or 'the config'}: {', '.join(schema)}")
        if isinstance(schema[key], dict):
            if value is None and path not in OPTIONAL_SECTIONS:
                raise ConfigError(f"{dotted} is a section and cannot be null; it takes the "
                                  f"keys {', '.join(schema[key])}")
            if value is not None:
                _check_section(value, schema[key], path)
        elif isinstance(value, dict):
            raise ConfigError(f"{dotted} is a value, not a section; got {value!r}")


def _lookup(config, path):
    node = config
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _check_value(config, path, rule):
    """Raise ConfigError unless the value at ``path`` (when present) follows ``rule``;
    numbers YAML read as text (``2e-3``) are converted in place."""
    present, value = _lookup(config, path)
    if not present:
        return
    dotted = ".".join(path)
    if rule.numeric and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{dotted} must be {rule.allowed}, got {value!r}") from None
        _lookup(config, path[:-1])[1][path[-1]] = value
    if not rule.accepts(value):
        hint = ""
        if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
            hint = " (a quoted string: write the number without quotes)"
        elif isinstance(value, bool) and "true" not in rule.allowed:
            hint = " (a boolean)"
        raise ConfigError(f"{dotted} must be {rule.allowed}, got {value!r}{hint}")


def _num_classes(arch):
    if "num_classes" in arch:
        return arch["num_classes"]
    from ..models.registry import model_arguments
    return model_arguments()["num_classes"]


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
    """Raise :class:`ConfigError` on any unknown section/key or a value outside its range
    (:data:`RULES`), naming the key and what it may be; numbers YAML read as strings
    (``2e-3``) become floats."""
    _check_section(config, DEFAULTS, ())
    _check_arch(config.get("Arch"))
    for path, rule in RULES.items():
        _check_value(config, path, rule)
    topk, num_classes = config["Metric"]["topk"], _num_classes(config["Arch"])
    if num_classes and max(topk) > num_classes:
        raise ConfigError(f"Metric.topk must be a list of integers in [1, Arch.num_classes = "
                          f"{num_classes}], got {topk!r}: a top-{max(topk)} accuracy over "
                          f"{num_classes} classes is always 1")
    if config["Global"]["to_static"] and config["Arch"].get("grad_checkpointing"):
        raise ConfigError("Global.to_static=True and Arch.grad_checkpointing=True do not go "
                          "together: Paddle 3.3.1's recompute fails in the backward pass of a "
                          "to_static graph (IndexError); switch one off")
    train = config["DataLoader"]["Train"]
    mixup = train["mixup"]
    if mixup:
        if mixup.get("mixup_alpha", 0) <= 0 and mixup.get("cutmix_alpha", 0) <= 0:
            raise ConfigError("DataLoader.Train.mixup needs mixup_alpha > 0 or cutmix_alpha > "
                              "0 (or mixup: null to switch it off)")
        if train["batch_size"] % 2:
            raise ConfigError(f"DataLoader.Train.batch_size must be even while mixup is on "
                              f"(each image is mixed with its mirror in the batch, as timm's "
                              f"Mixup), got {train['batch_size']}")
    _check_token_labeling(config)
    for mode in ("Train", "Eval"):
        dataset = config["DataLoader"][mode]["dataset"]
        if not dataset.get("root"):
            continue  # a config may leave data to the command line (-o ...root=...)
        if dataset["name"] == "ImageList" and not dataset.get("list_file"):
            raise ConfigError(f"DataLoader.{mode}.dataset: ImageList needs list_file")


def _check_token_labeling(config):
    """Label maps, the auxiliary token head and MixToken go together (LV-ViT)."""
    train = config["DataLoader"]["Train"]
    arch = config["Arch"]
    label_maps = train["dataset"].get("label_maps")
    if arch.get("token_inference") and not arch.get("token_head"):
        raise ConfigError("Arch.token_inference=True needs Arch.token_head=True")
    if label_maps and not arch.get("token_head"):
        raise ConfigError("DataLoader.Train.dataset.label_maps is set but Arch.token_head is "
                          "not: token labeling trains the auxiliary token head; set "
                          "-o Arch.token_head=True")
    if train["mix_token"]["enable"] and not label_maps:
        raise ConfigError("DataLoader.Train.mix_token.enable=True needs "
                          "DataLoader.Train.dataset.label_maps (MixToken mixes token targets)")
    size = train["transforms"]["input_size"]
    if label_maps and size % 32:
        raise ConfigError(f"token labeling needs DataLoader.Train.transforms.input_size to be a "
                          f"multiple of 32 (the stage-4 token stride), got {size}")
    if train["mix_token"]["enable"] and train["batch_size"] % 2:
        raise ConfigError(f"DataLoader.Train.batch_size must be even while mix_token is on "
                          f"(each image is mixed with its mirror in the batch), got "
                          f"{train['batch_size']}")


def apply_overrides(config, overrides):
    """Apply ``-o`` strings in order; the key path must exist in the schema (or Arch)."""
    config = copy.deepcopy(config)
    for text in overrides or ():
        keys, value = parse_override(text)
        node, schema = config, DEFAULTS
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
    user = apply_overrides(read_yaml(path), overrides)
    # validate what the user wrote before defaults hide a misplaced key
    _check_section(user, DEFAULTS, ())
    config = merge(DEFAULTS, user)
    # a user's Arch replaces the default one (its kwargs are not merged with another arch)
    config["Arch"] = copy.deepcopy(user.get("Arch", DEFAULTS["Arch"]))
    validate_config(config)
    return config
