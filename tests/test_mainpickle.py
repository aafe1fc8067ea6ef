"""What sends a task to cloudpickle: a global of ``__main__`` in the pickle, not the string "__main__".

``_mainpickle.dumps`` pickles with the C pickler and re-pickles by value only when unpickling in a
worker would look up a global of ``__main__`` (which a worker may not have): a ``GLOBAL`` opcode
(protocols 2-3), a ``STACK_GLOBAL`` whose module operand is "__main__" pushed directly or fetched
from the memo (4-5), an ``EXT`` code. A string "__main__" in the data (a dict key, scikit-learn's
copy of the warning filters, a pickle inside a bytes blob) only triggers the cheap byte scan.
"""

from __future__ import annotations

import copy
import copyreg
import functools
import operator
import pickle
import pickletools
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import taskloom as tl
from taskloom._backends import _mainpickle
from taskloom._backends._mainpickle import dumps, refers_to_main

PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)

#: Defined in the test process's ``__main__`` (as a script's functions would be), by ``main_defs``.
MAIN_SOURCE = '''
def _tl_test_double(x):
    return 2 * x

def _tl_test_key(x):
    return -x

class _TlTestBox:
    def __init__(self, value):
        self.value = value
'''
MAIN_NAMES = ("_tl_test_double", "_tl_test_key", "_TlTestBox")


@pytest.fixture
def main_defs() -> Iterator[dict[str, Any]]:
    """A function, a key function and a class of ``__main__``, removed again after the test."""
    namespace = sys.modules["__main__"].__dict__
    exec(compile(MAIN_SOURCE, "<__main__ of the test>", "exec"), namespace)
    try:
        yield {name: namespace[name] for name in MAIN_NAMES}
    finally:
        for name in MAIN_NAMES:
            namespace.pop(name, None)


@pytest.fixture
def by_value_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every object ``dumps`` sends to the by-value (cloudpickle) pickler, in this process."""
    calls: list[Any] = []
    real = _mainpickle.dumps_by_value

    def counting(obj: Any, **kwargs: Any) -> bytes:
        calls.append(obj)
        return real(obj, **kwargs)

    monkeypatch.setattr(_mainpickle, "dumps_by_value", counting)
    return calls


def _warning_filters() -> list[Any]:
    """What scikit-learn ships with every task: the caller's warning filters, "__main__" in them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        return list(warnings.filters)


def _strings_named_main() -> list[Any]:
    blob = pickle.dumps({"__main__": 1})
    return [
        "__main__",
        {"__main__": 1, "module": "__main__"},
        ["__main__", "__main__", ("__main__",)],
        b"__main__",
        bytearray(b"x__main__y"),
        re.compile("__main__"),
        _warning_filters(),
        blob,  # a pickle inside the data is bytes, whatever it says
        ["__main__", OrderedDict(a=1)],  # the string, then a STACK_GLOBAL of another module
        [str(i) for i in range(300)] + ["__main__", OrderedDict(b=2)],
    ]


def _ops(data: bytes) -> list[tuple[str, Any]]:
    return [(op.name, arg) for op, arg, _ in pickletools.genops(data)]


# -- refers_to_main: the precise check ---------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("index", range(len(_strings_named_main())))
def test_a_string_named_main_is_not_a_reference_to_main(protocol: int, index: int) -> None:
    data = pickle.dumps(_strings_named_main()[index], protocol=protocol)
    assert b"__main__" in data  # the byte scan hits: the precise check decides
    assert not refers_to_main(data), _ops(data)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("shape", ["bare", "list", "dict", "nested", "instance", "class", "partial", "after-string",
                                   "after-300-strings", "as-key-and-value"])
def test_a_global_of_main_is_found(main_defs: dict[str, Any], protocol: int, shape: str) -> None:
    double, box = main_defs["_tl_test_double"], main_defs["_TlTestBox"]
    obj = {
        "bare": double,
        "list": [1, double],
        "dict": {"f": double},
        "nested": [{"a": (1, [2, {"b": frozenset({double})}])}],
        "instance": box(3),
        "class": [box],
        "partial": functools.partial(double, 2),
        "after-string": ["__main__", double],  # the module operand comes from the memo (BINGET)
        "after-300-strings": [str(i) for i in range(300)] + ["__main__", double],  # LONG_BINGET
        "as-key-and-value": {"__main__": double},
    }[shape]
    data = pickle.dumps(obj, protocol=protocol)
    assert refers_to_main(data), _ops(data)


@pytest.mark.parametrize(("shape", "fetch"), [("after-string", "BINGET"), ("after-300-strings", "LONG_BINGET")])
def test_the_module_operand_from_the_memo_is_found(main_defs: dict[str, Any], shape: str, fetch: str) -> None:
    # The C pickler writes the string "__main__" once and fetches it from the memo for the global:
    # the check follows the memo, not the position of the string.
    strings = ["__main__"] if shape == "after-string" else [str(i) for i in range(300)] + ["__main__"]
    data = pickle.dumps([*strings, main_defs["_tl_test_double"]], protocol=pickle.HIGHEST_PROTOCOL)
    ops = [name for name, _ in _ops(data)]
    stack_global = ops.index("STACK_GLOBAL")
    assert fetch in ops[stack_global - 4:stack_global], ops[stack_global - 5:stack_global + 1]
    assert [arg for _, arg in _ops(data)].count("__main__") == 1
    assert refers_to_main(data)
    assert not refers_to_main(pickle.dumps([*strings, OrderedDict()], protocol=pickle.HIGHEST_PROTOCOL))


# Hand-written pickles: opcodes the C pickler does not write today, but a pickle may hold.
MAIN_PUSHED = {
    "GLOBAL": b"\x80\x02c__main__\nf\nq\x00.",
    "BINUNICODE": b"\x80\x04X\x08\x00\x00\x00__main__\x94\x8c\x01f\x94\x93\x94.",
    "BINUNICODE8": b"\x80\x04\x8d\x08\x00\x00\x00\x00\x00\x00\x00__main__\x8c\x01f\x93.",
    "BINPUT-BINGET": b"\x80\x04\x8c\x08__main__q\x070h\x07\x8c\x01f\x93.",
    "PUT-GET": b"\x80\x04\x8c\x08__main__p7\n0g7\n\x8c\x01f\x93.",
    "LONG_BINPUT-LONG_BINGET": b"\x80\x04\x8c\x08__main__r\x00\x01\x00\x000j\x00\x01\x00\x00\x8c\x01f\x93.",
    "MEMOIZE-in-a-FRAME": b"\x80\x04\x95\x12\x00\x00\x00\x00\x00\x00\x00\x8c\x08__main__\x94\x8c\x01f\x94\x93\x94.",
    "INST": b"(i__main__\nBox\np0\n.",
}
MAIN_AS_DATA = {
    "tuple": b"\x80\x04\x8c\x08__main__\x94\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x86\x94.",
    "memo, not module": b"\x80\x04\x8c\x08__main__q\x07\x8c\x0bcollections\x8c\x0bOrderedDict\x93h\x07\x87.",
    "name, not module": b"\x80\x04\x8c\x0bcollections\x8c\x08__main__\x93.",
}


@pytest.mark.parametrize("name", MAIN_PUSHED)
def test_every_way_to_name_main_as_the_module_is_found(name: str) -> None:
    assert refers_to_main(MAIN_PUSHED[name])
    # The same pickle naming another module reads to the end: what was found was the module.
    assert not refers_to_main(MAIN_PUSHED[name].replace(b"__main__", b"__nain__"))


@pytest.mark.parametrize("name", MAIN_AS_DATA)
def test_main_as_data_or_as_a_name_is_not_a_reference(name: str) -> None:
    assert not refers_to_main(MAIN_AS_DATA[name])


def test_an_extension_code_for_main_is_found(main_defs: dict[str, Any]) -> None:
    copyreg.add_extension("__main__", "_tl_test_double", 0x7FFF_FFF0)
    try:
        data = pickle.dumps([main_defs["_tl_test_double"]], protocol=2)
        assert "EXT4" in [name for name, _ in _ops(data)]
        assert b"__main__" not in data  # (dumps's byte scan would not look: nobody registers __main__ here)
        assert refers_to_main(data)
    finally:
        copyreg.remove_extension("__main__", "_tl_test_double", 0x7FFF_FFF0)


def test_what_is_not_a_readable_pickle_counts_as_a_reference() -> None:
    # The by-value path is never wrong, only slower.
    for data in (b"__main__", b"\x80\x05\x8c\x08__main__", b"\x80\x04P__main__\n."):
        assert refers_to_main(data)


def test_the_check_imports_and_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    class Loud:
        def __reduce__(self) -> Any:
            return (print, ("__main__ ran",))

    data = pickle.dumps([Loud(), "__main__"], protocol=pickle.HIGHEST_PROTOCOL)
    assert not refers_to_main(data)
    assert capsys.readouterr().out == ""
    unknown = b"\x80\x04\x8c\x08__main__\x8c\x17taskloom_no_such_module\x8c\x01f\x93\x86."
    before = set(sys.modules)
    assert not refers_to_main(unknown)
    assert set(sys.modules) == before


_scalars = st.one_of(st.sampled_from(["__main__", "__main", "main__", "x__main__"]), st.integers(),
                     st.text(max_size=5), st.binary(max_size=12), st.none())
_keys = st.sampled_from(["__main__", "k", "m"])
_data = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(_keys, inner, max_size=3)), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(data=_data, protocol=st.sampled_from(list(PROTOCOLS)), where=st.integers(0, 3))
def test_data_with_and_without_a_main_function(data: Any, protocol: int, where: int) -> None:
    assert not refers_to_main(pickle.dumps(data, protocol=protocol))
    namespace = sys.modules["__main__"].__dict__
    exec(compile(MAIN_SOURCE, "<__main__ of the test>", "exec"), namespace)
    try:
        double = namespace["_tl_test_double"]
        placed = [[data, double], {"f": double, "d": data}, (double, data), [data, [("__main__", double)]]][where]
        assert refers_to_main(pickle.dumps(placed, protocol=protocol))
    finally:
        for name in MAIN_NAMES:
            namespace.pop(name, None)


# -- dumps: the fast path stays fast, the by-value path is taken when needed -------------------------
@pytest.mark.parametrize("index", range(len(_strings_named_main())))
def test_dumps_keeps_the_plain_pickle_of_data_that_says_main(by_value_calls: list[Any], index: int) -> None:
    obj = _strings_named_main()[index]
    assert dumps(obj) == pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    assert by_value_calls == []


def test_dumps_sends_a_main_function_by_value_wherever_it_is(main_defs: dict[str, Any],
                                                               by_value_calls: list[Any]) -> None:
    double, key = main_defs["_tl_test_double"], main_defs["_tl_test_key"]
    objects = [double, [1, {"f": (double,)}], functools.partial(sorted, key=key), ["__main__", double]]
    for obj in objects:
        data = dumps(obj)
        assert data != pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        assert b"__main__" not in data or not refers_to_main(data)  # the by-value pickle needs no __main__
    assert len(by_value_calls) == len(objects)


def test_a_scikit_learn_task_is_pickled_once(by_value_calls: list[Any]) -> None:
    # What made every scikit-learn task pickle twice: its warning filters say "__main__".
    import sklearn  # a test dependency (make test installs it): never skipped
    from sklearn.svm import SVC
    from sklearn.utils.parallel import _FuncWrapper

    wrapped = _FuncWrapper(copy.deepcopy).with_config_and_warning_filters(sklearn.get_config(), _warning_filters())
    task: tuple[Any, ...] = (wrapped, (SVC(C=2.0),), {})
    assert b"__main__" in pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    assert dumps(task) == pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    assert by_value_calls == []


# -- through a real process pool ------------------------------------------------------------------------
def test_data_that_says_main_round_trips_plainly(by_value_calls: list[Any]) -> None:
    items = _strings_named_main()
    results = tl.map(copy.deepcopy, items, mode=tl.Processes(), workers=2)
    assert results == items
    assert by_value_calls == []


def test_main_functions_round_trip_by_value(main_defs: dict[str, Any], by_value_calls: list[Any]) -> None:
    double, key, box = main_defs["_tl_test_double"], main_defs["_tl_test_key"], main_defs["_TlTestBox"]
    mode = tl.Processes()
    assert tl.map(double, [1, 2, 3], mode=mode, workers=2) == [2, 4, 6]
    # nested: in a partial (the function), in the items (a list of functions), in a dict
    assert tl.map(functools.partial(sorted, key=key), [[1, 3, 2]], mode=mode, workers=2) == [[3, 2, 1]]
    call_with_5: Callable[[Any], Any] = operator.methodcaller("__call__", 5)
    assert tl.map(call_with_5, [double, box], mode=mode, workers=2)[0] == 10
    boxed = tl.map(operator.itemgetter("box"), [{"box": box(7), "name": "__main__"}], mode=mode, workers=2)
    assert boxed[0].value == 7
    assert type(boxed[0]).__name__ == "_TlTestBox"
    assert by_value_calls  # each of those went by value
