"""Every public name, tool and config the README and the docs/ pages document exists and
resolves; their python snippets and quick commands run."""
import glob
import importlib
import os
import re
import textwrap

import pytest

from conftest import ROOT


def _read(path):
    with open(os.path.join(ROOT, path)) as handle:
        return handle.read()


# the README first (its snippets run first, in one namespace), then the pages it links
PAGES = [("README.md", _read("README.md"))] + [
    (os.path.relpath(path, ROOT), _read(path))
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
README = PAGES[0][1]
ALL_TEXT = "\n".join(text for _, text in PAGES)

# dotted names of the package the pages mention (code spans and blocks)
NAMES = sorted(set(re.findall(r"\bpaddle_pale(?:\.[A-Za-z_][A-Za-z0-9_]*)+", ALL_TEXT)))
PATHS = sorted(set(re.findall(r"\b(?:tools|configs)/[\w./{},-]+\.(?:py|ya?ml)\b", ALL_TEXT)))
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


# ---------------------------------------------------------- the README's code, executed
FENCE = re.compile(r"(?:<!-- (?P<marker>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```",
                   re.S)
BLOCKS = [(m.group("marker") or "", m.group("lang"), m.group("body"),
           f"{page}:{text[:m.start()].count(chr(10)) + 1}")
          for page, text in PAGES for m in FENCE.finditer(text)]
SNIPPETS = [(line, marker, textwrap.dedent(body)) for marker, lang, body, line in BLOCKS
            if lang == "python"]
QUICK = [(line, command) for marker, lang, body, line in BLOCKS
         if lang == "bash" and marker == "quick"
         for command in body.replace("\\\n", " ").splitlines()
         if command.strip() and not command.lstrip().startswith("#")]


def test_every_python_snippet_runs_or_says_why_not():
    """One namespace, in README order, as a reader pastes them into one session;
    a snippet that cannot run here carries ``<!-- not-run: reason -->``."""
    assert len(SNIPPETS) >= 4
    namespace = {}
    for line, marker, body in SNIPPETS:
        if marker.startswith("not-run:"):
            assert len(marker) > len("not-run: ") + 10, f"{line}: give the reason"
            continue
        assert not marker, f"{line}: unknown marker {marker!r}"
        for adapter, library in (("adapters.paddleseg", "paddleseg"),
                                 ("adapters.ppdet", "ppdet")):
            if adapter in body:
                pytest.importorskip(library)
        try:
            exec(compile(body, line, "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"the snippet at {line} fails: "
                                 f"{type(error).__name__}: {error}") from error
    # what the first snippet's comments promise
    assert namespace["logits"].shape == [1, 1000]
    assert [f.shape[1] for f in namespace["features"]] == namespace["model"].feat_channels
    assert namespace["out"].shape == namespace["q"].shape


@pytest.mark.parametrize("line, command", QUICK)
def test_quick_commands_run(line, command, tmp_path):
    """Each command of a ``<!-- quick -->`` block, as pasted in a fresh folder (the
    tools and configs taken from the checkout)."""
    import shlex
    import subprocess
    import sys

    words = shlex.split(command)
    assert words[0] == "python" and words[1].startswith("tools/"), command
    argv = [sys.executable, os.path.join(ROOT, words[1])] + [
        os.path.join(ROOT, word) if word.startswith("configs/") else word
        for word in words[2:]]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, f"{line}: {command}\n{done.stderr[-2000:]}"


def test_some_commands_are_marked_quick():
    assert QUICK
