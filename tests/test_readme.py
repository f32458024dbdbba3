"""Every public name, tool and config the README documents exists and resolves."""
import importlib
import os
import re

import pytest

from conftest import ROOT

with open(os.path.join(ROOT, "README.md")) as handle:
    README = handle.read()

# dotted names of the package the README mentions (code spans and blocks)
NAMES = sorted(set(re.findall(r"\bpaddle_pale(?:\.[A-Za-z_][A-Za-z0-9_]*)+", README)))
PATHS = sorted(set(re.findall(r"\b(?:tools|configs)/[\w./{},-]+\.(?:py|ya?ml)\b", README)))
# tools of a PaddleSeg / PaddleDetection checkout, which the README tells how to use
EXTERNAL_TOOLS = {"tools/val.py", "tools/export_model.py"}
# adapters that need the optional libraries
OPTIONAL = {"paddle_pale.adapters.paddleseg": "paddleseg",
            "paddle_pale.adapters.paddleseg_engine": "paddleseg",
            "paddle_pale.adapters.ppdet": "ppdet", "paddle_pale.adapters.ppdet_engine": "ppdet",
            "paddle_pale.adapters.ppdet_compat": "ppdet"}


def _resolve(dotted):
    """The module or attribute ``dotted`` names (the longest importable module prefix,
    then attributes)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_readme_documents_names_and_paths():
    assert len(NAMES) > 10 and len(PATHS) > 15


@pytest.mark.parametrize("dotted", NAMES)
def test_documented_name_resolves(dotted):
    for prefix, library in OPTIONAL.items():
        if dotted.startswith(prefix):
            pytest.importorskip(library)
    assert _resolve(dotted) is not None


def _expand(path):
    """``configs/seg/upernet_pale_{t,s,b}_...yml`` -> one path per variant."""
    match = re.search(r"\{([^}]*)\}", path)
    if not match:
        return [path]
    return [p for option in match.group(1).split(",")
            for p in _expand(path[:match.start()] + option + path[match.end():])]


@pytest.mark.parametrize("path", [p for p in PATHS if p not in EXTERNAL_TOOLS])
def test_documented_path_exists(path):
    for expanded in _expand(path):
        assert os.path.isfile(os.path.join(ROOT, expanded)), expanded
