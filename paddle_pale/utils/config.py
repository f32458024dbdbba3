"""Reading configuration files: YAML with ``_base_`` includes, ``KEY=VALUE`` overrides.

What a training config may hold (its keys, defaults and ranges) is the engine's
(:mod:`paddle_pale.engine.config`); this module only reads and merges files, for every
config reader of the package. Ground layer: imports nothing of the package.
"""
import copy
import os

import yaml

__all__ = ["ConfigError", "merge", "read_yaml", "parse_override", "dump_config"]


class ConfigError(ValueError):
    """A config file, key or value that cannot be used."""


def merge(base, update):
    """Recursive dict merge; ``update`` wins, sections are merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path, seen=()):
    """The mapping in YAML file ``path``, its ``_base_`` file(s) (paths relative to it)
    merged in first; ConfigError naming the file on a missing file, a parse error, an
    include cycle or a top level that is not a mapping."""
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
        merged = merge(merged, read_yaml(base_path, seen + (path,)))
    return merge(merged, data)


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


def dump_config(config):
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
