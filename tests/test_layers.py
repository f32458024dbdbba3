"""The package's layers, as code: import-linter's contracts in .importlinter hold, and
they would catch a wrong-way import."""
import configparser
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(cwd, env=None):
    if not os.path.exists(LINT_IMPORTS):
        pytest.fail(f"lint-imports is not installed next to {sys.executable} "
                    f"(pip install -e '.[dev]')")
    return subprocess.run([LINT_IMPORTS], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _contracts():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, ".importlinter"))
    return {section: parser[section] for section in parser.sections()
            if section.startswith("importlinter:contract:")}


def test_every_contract_is_kept():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for contract in _contracts().values():
        assert f"{contract['name']} KEPT" in " ".join(done.stdout.split()), contract["name"]
    assert f"{len(_contracts())} kept, 0 broken" in done.stdout


def test_the_tools_contract_names_every_tool():
    forbidden = set(_contracts()["importlinter:contract:tools"]["forbidden_modules"].split())
    scripts = {name[:-3] for name in os.listdir(os.path.join(ROOT, "tools"))
               if name.endswith(".py")}
    assert forbidden == scripts | {"tools"}


@pytest.mark.parametrize("module,line,contract", [
    ("models/layers.py", "from ..engine import config", "models"),
    ("utils/io.py", "from ..models import registry", "ground"),
    ("adapters/ppdet_compat.py", "from ..engine import ema", "adapters"),
    ("data/mixup.py", "from ..models import layers", "data"),
    ("export.py", "import predict", "tools"),
])
def test_a_wrong_way_import_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(os.path.join(ROOT, "paddle_pale"), tmp_path / "paddle_pale",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, ".importlinter"), tmp_path / ".importlinter")
    with open(tmp_path / "paddle_pale" / module, "a") as handle:
        handle.write(f"\n{line}  # noqa\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = _lint(str(tmp_path), env)
    assert done.returncode != 0
    name = _contracts()[f"importlinter:contract:{contract}"]["name"]
    assert f"{name} BROKEN" in " ".join(done.stdout.split()), done.stdout[-3000:]
