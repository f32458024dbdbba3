"""The fix mechanism of the seg/det adapters (paddle_pale.adapters.compat), on a stand-in
library module: a fix is installed only where its probe shows the bug, keeps the
signature it wraps, installs once, and reaches names other modules imported."""
import sys
import types

import pytest

from paddle_pale.adapters import compat


@pytest.fixture()
def library(monkeypatch):
    """``fakelib.core`` with a broken and a sound function, and ``fakelib.user``, which
    imported the broken one by name."""
    core = types.ModuleType("fakelib.core")
    exec("def broken(x, *, scale=1):\n    return x.upper() * scale\n"
         "def sound(x):\n    return x\n", core.__dict__)
    user = types.ModuleType("fakelib.user")
    user.broken = core.broken
    for name, module in (("fakelib", types.ModuleType("fakelib")), ("fakelib.core", core),
                         ("fakelib.user", user)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(compat, "_NEEDED", {})
    return core, user


def _wrap(unpatched):
    def fixed(x, *args, **kwargs):  # the fix: accept a number as well
        return unpatched(str(x), *args, **kwargs)
    return fixed


def _fails_on_a_number(unpatched):
    return compat.fails(AttributeError, lambda: unpatched(3), match="upper")


def test_installed_only_where_the_probe_finds_the_bug(library):
    core, user = library
    sound = core.sound
    compat.install([compat.Fix("fakelib.core", "broken", _wrap, _fails_on_a_number),
                    compat.Fix("fakelib.core", "sound", _wrap,
                               lambda unpatched: compat.fails(TypeError,
                                                              lambda: unpatched(3)))])
    assert compat.needed("fakelib.core", "broken") is True
    assert compat.needed("fakelib.core", "sound") is False
    assert core.sound is sound  # not needed: the library's own function runs
    assert core.broken(3, scale=2) == "33"  # keyword arguments pass through
    assert user.broken is core.broken  # the name user imported is replaced too
    assert compat.original("fakelib.core", "broken")("ab") == "AB"
    first = core.broken
    compat.install([compat.Fix("fakelib.core", "broken", _wrap, _fails_on_a_number)])
    assert core.broken is first  # installing again changes nothing


def test_a_probe_meeting_another_error_says_so(library):
    with pytest.raises(AttributeError, match="upper"):
        compat.fails(AttributeError, lambda: library[0].broken(3), match="something else")
    with pytest.raises(KeyError, match="not installed yet"):
        compat.needed("fakelib.core", "broken")


def test_rebind_globals_keeps_the_code_and_reads_the_replacement(library):
    core, _ = library
    exec("import math\ndef root(x):\n    return math.sqrt(x)\n", core.__dict__)
    fixed = compat.rebind_globals(math=lambda m: compat.Proxy(m, sqrt=lambda x: -x))(core.root)
    assert fixed.__code__ is core.root.__code__
    assert (fixed(4), core.root(4)) == (-4, 2.0)
    with pytest.raises(KeyError, match="reads no global 'numpy'"):
        compat.rebind_globals(numpy=lambda m: m)(core.root)
