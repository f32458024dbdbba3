import json
import os

import pytest
import yaml

from paddle_pale.engine.config import (DEFAULTS, RULES, ConfigError, apply_overrides,
                                       load_config)
from paddle_pale.utils.config import parse_override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_base_include_merges_sections_key_by_key(tmp_path):
    write(tmp_path / "base.yaml", {"Global": {"epochs": 300, "seed": 7},
                                   "Optimizer": {"lr": {"base_lr": 1e-3, "warmup_epochs": 20}}})
    child = write(tmp_path / "child.yaml", {"_base_": "base.yaml", "Global": {"epochs": 5},
                                            "Optimizer": {"lr": {"warmup_epochs": 1}}})
    config = load_config(child)
    assert config["Global"]["epochs"] == 5          # child wins
    assert config["Global"]["seed"] == 7            # kept from the base
    assert config["Optimizer"]["lr"] == dict(DEFAULTS["Optimizer"]["lr"], base_lr=1e-3,
                                             warmup_epochs=1)
    assert config["Global"]["print_interval"] == DEFAULTS["Global"]["print_interval"]


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = write(tmp_path / "c.yaml", {"Arch": {"name": "pale_t"}})
    config = load_config(path, ["Global.epochs=3", "Optimizer.grad_clip=null",
                                "AMP.enable=True", "Arch.depths=[1, 1, 2, 1]",
                                "Global.output_dir=out/run 1", "Optimizer.lr.base_lr=2e-3"])
    assert config["Global"]["epochs"] == 3
    assert config["Optimizer"]["grad_clip"] is None
    assert config["AMP"]["enable"] is True
    assert config["Arch"]["depths"] == [1, 1, 2, 1]
    assert config["Global"]["output_dir"] == "out/run 1"
    assert config["Optimizer"]["lr"]["base_lr"] == 2e-3


def test_override_of_a_disabled_subsection_turns_it_on_with_defaults():
    config = apply_overrides({"DataLoader": {"Train": {"mixup": None}}},
                             ["DataLoader.Train.mixup.prob=0.5"])
    assert config["DataLoader"]["Train"]["mixup"] == {"prob": 0.5}


@pytest.mark.parametrize("data, message", [
    ({"Globl": {"epochs": 1}}, "unknown config key 'Globl'; valid keys of the config: Global"),
    ({"Global": {"epoch": 1}}, "unknown config key 'Global.epoch'; valid keys of Global: "
                               "epochs"),
    ({"Optimizer": {"lr": {"warmup": 3}}}, "valid keys of Optimizer.lr: name, base_lr"),
    ({"Arch": {"name": "pale_t", "drop_path": 0.1}}, "unknown config key 'Arch.drop_path'"),
    ({"Arch": {"name": "pale_x"}}, "Arch.name must be one of ['pale_b', 'pale_s', 'pale_t']"),
    ({"AMP": {"dtype": "fp16"}}, "AMP.dtype must be one of ['float16', 'bfloat16'], got 'fp16'"),
    ({"Global": {"epochs": 0}}, "Global.epochs must be an integer >= 1, got 0"),
    ({"Metric": {"topk": [5]}}, "Metric.topk must be a list of integers >= 1 that includes 1"),
    ({"Loss": 0.1}, "Loss must be a mapping"),
])
def test_bad_config_is_an_error_naming_the_key_and_the_valid_ones(tmp_path, data, message):
    path = write(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)


@pytest.mark.parametrize("override, message", [
    ("Global.epoch=3", "unknown config key 'Global.epoch'"),
    ("Globl.epochs=3", "'Globl' is not a config section; sections here: Global, AMP"),
    ("Global.epochs", "must look like Section.key=value"),
    ("Optimizer..lr=1", "empty key"),
    ("Global.epochs=[1,", "cannot parse value"),
])
def test_bad_override_is_an_error(tmp_path, override, message):
    path = write(tmp_path / "c.yaml", {})
    with pytest.raises(ConfigError, match=None) as error:
        load_config(path, [override])
    assert message in str(error.value)


def test_parse_override_splits_at_the_first_equal_sign():
    assert parse_override("Global.output_dir=a=b") == (["Global", "output_dir"], "a=b")


def test_missing_file_and_include_cycle(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize("variant, drop_path_rate", [("t", 0.2), ("s", 0.3), ("b", 0.5)])
def test_shipped_imagenet_configs_hold_the_recipe(variant, drop_path_rate):
    config = load_config(os.path.join(CONFIGS, f"pale_{variant}.yaml"))
    assert config["Arch"] == {"name": f"pale_{variant}", "num_classes": 1000,
                              "drop_path_rate": drop_path_rate}
    # paper: 300 epochs, total batch 1024 on 8 GPUs, 224x224 train and eval
    assert config["Global"]["epochs"] == 300
    assert 8 * config["DataLoader"]["Train"]["batch_size"] == 1024
    assert config["DataLoader"]["Train"]["transforms"]["input_size"] == 224
    assert config["DataLoader"]["Eval"]["transforms"]["input_size"] == 224
    optimizer = config["Optimizer"]
    assert (optimizer["name"], optimizer["weight_decay"]) == ("AdamW", 0.05)
    assert optimizer["lr"]["base_lr"] / optimizer["lr"]["reference_batch"] == 1e-3 / 1024
    assert optimizer["lr"]["warmup_epochs"] == 20
    assert config["Loss"]["label_smoothing"] == 0.1
    train = config["DataLoader"]["Train"]
    assert train["mixup"]["mixup_alpha"] == 0.8 and train["mixup"]["cutmix_alpha"] == 1.0
    assert train["transforms"]["random_erasing"] == 0.25
    assert train["transforms"]["randaugment"] == {"num_ops": 2, "magnitude": 9,
                                                  "magnitude_std": 0.5}


def test_demo_config_loads():
    config = load_config(os.path.join(CONFIGS, "demo.yaml"))
    assert config["DataLoader"]["Train"]["dataset"]["generate"] == "sklearn_digits"
    assert config["Arch"]["num_classes"] == 10


def test_exponent_without_dot_is_a_number_and_text_is_an_error(tmp_path):
    path = write(tmp_path / "c.yaml", {})
    assert load_config(path, ["Optimizer.weight_decay=5e-2"])["Optimizer"]["weight_decay"] == 0.05
    with pytest.raises(ConfigError,
                       match="Optimizer.weight_decay must be a number >= 0.0, got 'high'"):
        load_config(path, ["Optimizer.weight_decay=high"])


def test_flops_tool_reads_arch_and_input_size_from_a_config(capsys):
    import runpy
    import sys
    argv = sys.argv
    sys.argv = ["flops.py", "-c", os.path.join(CONFIGS, "demo.yaml")]
    try:
        runpy.run_path(os.path.join(ROOT, "tools", "flops.py"), run_name="__main__")
    finally:
        sys.argv = argv
    from paddle_pale import create_model
    from paddle_pale.utils.flops import format_flops_report
    config = load_config(os.path.join(CONFIGS, "demo.yaml"))
    arch = {k: v for k, v in config["Arch"].items() if k != "name"}
    assert capsys.readouterr().out.strip() == format_flops_report(
        create_model("pale_t", **arch),
        f"pale_t with the Arch of {os.path.join(CONFIGS, 'demo.yaml')}", (32, 32))


# ------------------------------------------------------------------ value ranges
# For every key: a value outside the range its rule allows. A new key needs a rule in
# RULES and a bad value here (test_every_key_has_a_range_rule).
BAD_VALUES = {
    "Global.epochs": 0, "Global.output_dir": "", "Global.seed": -1, "Global.device": "tpu",
    "Global.eval_interval": 0, "Global.save_interval": -2, "Global.print_interval": 0,
    "Global.accum_steps": 0, "Global.resume": 5, "Global.pretrained": "",
    "Global.use_visualdl": "yes", "Global.overwrite": 1, "Global.to_static": "no",
    "AMP.enable": 1, "AMP.dtype": "fp16", "AMP.level": "O3", "AMP.init_loss_scaling": 0,
    "EMA.enable": "on", "EMA.decay": 1.0,
    "Loss.label_smoothing": 2,
    "Optimizer.name": "SGD", "Optimizer.beta1": 1.0, "Optimizer.beta2": -0.1,
    "Optimizer.epsilon": 0, "Optimizer.weight_decay": -0.05,
    "Optimizer.no_decay_norm_and_bias": "true", "Optimizer.grad_clip": -1,
    "Optimizer.layer_decay": 1.5,
    "Optimizer.lr.name": "Step", "Optimizer.lr.base_lr": 0,
    "Optimizer.lr.reference_batch": 0, "Optimizer.lr.warmup_epochs": -1,
    "Optimizer.lr.warmup_start_lr": -1e-6, "Optimizer.lr.min_lr": -1e-5,
    "DataLoader.Train.transforms.scale": [0.5, 0.1],
    "DataLoader.Train.transforms.ratio": [0, 1],
    "DataLoader.Train.transforms.hflip": 1.5,
    "DataLoader.Train.transforms.randaugment.num_ops": 0,
    "DataLoader.Train.transforms.randaugment.magnitude": 11,
    "DataLoader.Train.transforms.randaugment.magnitude_std": -1,
    "DataLoader.Train.transforms.random_erasing": 1.5,
    "DataLoader.Train.mixup.mixup_alpha": -0.1, "DataLoader.Train.mixup.cutmix_alpha": -1,
    "DataLoader.Train.mixup.prob": 2, "DataLoader.Train.mixup.switch_prob": -0.5,
    "DataLoader.Eval.transforms.crop_pct": 0,
    "Metric.topk": [0, 1],
    "Arch.in_channels": 1, "Arch.num_classes": -1, "Arch.embed_dims": [0, 16, 16, 16],
    "Arch.depths": [], "Arch.num_heads": [0, 2, 2, 2], "Arch.pale_size": 0,
    "Arch.mlp_ratio": 0, "Arch.qkv_bias": "yes", "Arch.drop_rate": 1.0,
    "Arch.drop_path_rate": -0.1, "Arch.with_classifier": False,
    "Arch.attention_mode": "swin", "Arch.stripe_width": 0,
    "Arch.grad_checkpointing": "yes", "Arch.channels_last": 1, "Arch.token_head": "yes",
    "Arch.token_inference": 1,
    "Loss.token_beta": -0.5, "DataLoader.Train.dataset.label_maps": "",
    "DataLoader.Train.mix_token.enable": "on", "DataLoader.Train.mix_token.alpha": 0.0,
    "DataLoader.Train.mix_token.prob": 1.5,
}
for _mode in ("Train", "Eval"):
    BAD_VALUES.update({
        f"DataLoader.{_mode}.dataset.name": "Folder", f"DataLoader.{_mode}.dataset.root": "",
        f"DataLoader.{_mode}.dataset.list_file": 3,
        f"DataLoader.{_mode}.dataset.generate": "mnist",
        f"DataLoader.{_mode}.transforms.input_size": 3,  # below the 4x4 patch
        f"DataLoader.{_mode}.transforms.interpolation": "cubic",
        f"DataLoader.{_mode}.transforms.mean": [0.5, 0.5],
        f"DataLoader.{_mode}.transforms.std": [0.2, 0.2, 0.0],
        f"DataLoader.{_mode}.batch_size": -1, f"DataLoader.{_mode}.num_workers": -1})


def _leaves(schema, where=()):
    for key, value in schema.items():
        if isinstance(value, dict):
            yield from _leaves(value, where + (key,))
        else:
            yield where + (key,)


def test_every_key_has_a_range_rule():
    from paddle_pale.engine.config import _arch_keys
    keys = set(_leaves(DEFAULTS)) | {("Arch", k) for k in _arch_keys() if k != "name"}
    keys.discard(("Arch", "name"))  # checked against the registry
    assert keys - set(RULES) == set(), "keys without a range rule"
    assert {".".join(k) for k in RULES} == set(BAD_VALUES), "rules without a bad value here"


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_value_out_of_range_names_the_key_and_the_range(tmp_path, key):
    path = write(tmp_path / "c.yaml", {"Arch": {"name": "pale_t"}})
    rule = RULES[tuple(key.split("."))]
    value = BAD_VALUES[key]
    with pytest.raises(ConfigError) as error:
        load_config(path, [f"{key}={json.dumps(value)}"])
    assert str(error.value).startswith(f"{key} must be {rule.allowed}, got {value!r}")


@pytest.mark.parametrize("override, message", [
    # the cases of issue 13 (items 7, 8 and 11), each once accepted or misreported
    ("Loss.label_smoothing=2", "Loss.label_smoothing must be a number in [0.0, 1.0), got 2"),
    ("Optimizer.grad_clip=-1", "Optimizer.grad_clip must be a number > 0.0, or null, got -1"),
    ("DataLoader.Train.batch_size=-1",
     "DataLoader.Train.batch_size must be an integer >= 1, got -1"),
    ("DataLoader.Eval.num_workers=-1",
     "DataLoader.Eval.num_workers must be an integer >= 0, got -1"),
    ("Arch.num_classes=-1", "Arch.num_classes must be an integer >= 0, got -1"),
    ("Arch.num_classes='10'", "Arch.num_classes must be an integer >= 0, got '10' (a quoted "
                              "string: write the number without quotes)"),
    ("Global.epochs='2'", "Global.epochs must be an integer >= 1, got '2' (a quoted string"),
    ("DataLoader.Train.transforms.input_size=0",
     "DataLoader.Train.transforms.input_size must be an integer >= 4, got 0"),
    ("DataLoader.Eval.transforms.mean=[0.5, 0.5]",
     "DataLoader.Eval.transforms.mean must be a list of 3 numbers in [0.0, 1.0], got [0.5, 0.5]"),
])
def test_issue_cases_name_the_key_and_the_range(tmp_path, override, message):
    path = write(tmp_path / "c.yaml", {"Arch": {"name": "pale_t", "num_classes": 10}})
    with pytest.raises(ConfigError) as error:
        load_config(path, [override])
    assert message in str(error.value)


def test_topk_beyond_the_classes_and_odd_mixup_batches_are_refused(tmp_path):
    path = write(tmp_path / "c.yaml", {"Arch": {"name": "pale_t", "num_classes": 10}})
    with pytest.raises(ConfigError, match=r"Metric.topk must be a list of integers in \[1, "
                                          r"Arch.num_classes = 10\], got \[1, 20\]"):
        load_config(path, ["Metric.topk=[1, 20]"])
    assert load_config(path, ["Metric.topk=[1, 10]"])["Metric"]["topk"] == [1, 10]
    # timm's Mixup mixes each image with its mirror in the batch: the batch must be even
    with pytest.raises(ConfigError, match="batch_size must be even while mixup is on"):
        load_config(path, ["DataLoader.Train.batch_size=7"])
    assert load_config(path, ["DataLoader.Train.batch_size=7",
                              "DataLoader.Train.mixup=null"])["DataLoader"]["Train"]["mixup"] \
        is None
    with pytest.raises(ConfigError, match="mixup_alpha > 0 or cutmix_alpha > 0"):
        load_config(path, ["DataLoader.Train.mixup.mixup_alpha=0",
                           "DataLoader.Train.mixup.cutmix_alpha=0"])
    with pytest.raises(ConfigError, match="Global is a section and cannot be null"):
        load_config(path, ["Global=null"])
