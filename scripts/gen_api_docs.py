#!/usr/bin/env python3
"""Generate ``docs/api.md``, taskloom's API reference, from the docstrings.

    python scripts/gen_api_docs.py            # (re)write docs/api.md  (also: make docs)
    python scripts/gen_api_docs.py --check    # exit 1 and show a diff if docs/api.md is stale

Every name of ``taskloom.__all__`` (and of ``taskloom.testing.__all__``) must be placed in one of
the groups below: a public name that is not placed makes the generator fail, so a new name cannot
be left out of the reference. ``tests/test_docs.py`` checks that docs/api.md is exactly what this
script produces, so the reference cannot go stale either.

The output is deterministic: signatures are rendered from the annotations as written in the source
(every taskloom module uses ``from __future__ import annotations``), members in definition order,
and nothing depends on the machine, the time or the Python version (3.10 to 3.13 give the same bytes).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib
import inspect
import re
import sys
import textwrap
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "api.md"
COMMAND = "python scripts/gen_api_docs.py"

#: (group title, intro paragraph, names of taskloom.__all__ in the order shown)
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Running work",
        "Apply a function to many items on any engine (`map`, `imap`, `starmap`; `amap` and `aimap` from "
        "inside a running event loop), or submit calls one by one to an `Executor`. Every option of `imap` "
        "applies to all of them.",
        ("map", "imap", "starmap", "amap", "aimap", "Run", "AsyncRun", "Outcome", "as_completed", "wait",
         "Executor", "shutdown"),
    ),
    (
        "Modes",
        "Which engine runs the tasks. `mode=` takes a mode's name as a string (`\"threads\"`) or one of "
        "these objects, which carry that engine's own settings; `Mode` in a signature means any of them.",
        ("Sequential", "Threads", "Processes", "Async", "Dask", "Auto"),
    ),
    (
        "Choosing a mode",
        "What `mode=\"auto\"` measures and decides, available without running the job.",
        ("advise", "Advice"),
    ),
    (
        "Observing a run",
        "Numbers about a run while it runs and after it ended, and what a `progress=` callback receives.",
        ("RunStatistics", "ProgressUpdate"),
    ),
    (
        "Errors",
        "Every exception taskloom raises itself derives from `TaskloomError`; a failed task is a `TaskError` "
        "with the original exception as its `__cause__`. Every one of them pickles, so an error raised in a "
        "worker process arrives whole. `StageError` is not an exception: it is the record of one failure "
        "collected by a pipeline stage.",
        ("TaskloomError", "TaskError", "TaskTimeout", "WorkerCrashed", "SerializationError", "StageError",
         "DeadlockError", "LockOrderError"),
    ),
    (
        "Pipelines",
        "Producer/consumer stages, each on its own engine, joined by bounded queues.",
        ("pipeline", "Pipeline", "PipelineStatistics", "StageStatistics"),
    ),
    (
        "Shared state and locks",
        "Numbers and numpy arrays shared by threads and processes (passed to running workers as ordinary "
        "arguments), locks with a checked order, and deadlock detection.",
        ("Counter", "Value", "SharedArray", "OrderedLock", "OrderedRLock", "acquire", "deadlock_watch"),
    ),
    (
        "Services",
        "A function running in the background, stopped cleanly.",
        ("background", "Service"),
    ),
    (
        "Version",
        "",
        ("__version__",),
    ),
)

TESTING_GROUP = (
    "taskloom.testing",
    "A stress harness that finds races in threaded code, and its pytest plugin. `taskloom.testing` is a "
    "public submodule (`import taskloom.testing`, or `taskloom.testing` after `import taskloom`); its names "
    "are not in `taskloom.__all__`.",
    ("stress", "StressFailure", "StressReport"),
)

#: Classes users receive from taskloom and do not construct: their constructor is not shown.
MADE_BY: dict[str, str] = {
    "Run": "returned by `imap()`",
    "AsyncRun": "returned by `aimap()`",
    "Outcome": "yielded by `imap()`/`map()` with `on_error=\"collect\"`",
    "Advice": "returned by `advise()`; `Run.advice` with `mode=\"auto\"`",
    "RunStatistics": "returned by `Run.statistics()`",
    "ProgressUpdate": "passed to a `progress=` callback",
    "StageError": "listed in `Pipeline.errors`",
    "Pipeline": "returned by `pipeline()` and its `then()`/`filter()`/`batch()`/`flatten()`",
    "PipelineStatistics": "returned by `Pipeline.statistics()`",
    "StageStatistics": "in `PipelineStatistics.stages`",
    "SharedArray": "made with `SharedArray.from_numpy()` or `SharedArray.zeros()`",
    "Service": "returned by `background()`",
    "StressReport": "returned by `stress()`",
}

#: Names re-exported from the standard library: their stdlib docstrings differ between Python
#: versions, so the reference says what they are here and links to the stdlib's documentation.
REEXPORTED: dict[str, str] = {
    "as_completed": (
        "`concurrent.futures.as_completed`, re-exported: an iterator over the given futures (from "
        "`Executor.submit`) that yields each one as it finishes (done or cancelled).\n\n"
        "Raises `TimeoutError` if some are still pending `timeout` seconds after the call. "
        "See the [standard library documentation]"
        "(https://docs.python.org/3/library/concurrent.futures.html#concurrent.futures.as_completed)."
    ),
    "wait": (
        "`concurrent.futures.wait`, re-exported: wait until the given futures (from `Executor.submit`) "
        "are done, or the first one is (`return_when=\"FIRST_COMPLETED\"`), or the first one raised "
        "(`\"FIRST_EXCEPTION\"`), or `timeout` seconds have passed.\n\n"
        "Returns a named tuple `(done, not_done)` of sets of futures. "
        "See the [standard library documentation]"
        "(https://docs.python.org/3/library/concurrent.futures.html#concurrent.futures.wait)."
    ),
}

#: Private type aliases in annotations, spelt out for readers (applied as whole-word regexes).
ALIASES: tuple[tuple[str, str], ...] = (
    (r"\bModeLike\b", "str | Mode"),
    (r"\bOnError\b", "Literal['raise', 'collect']"),
    (r"\bChunksize\b", "int | Literal['auto']"),
    (r"\bRestart\b", "Literal['never', 'on-failure']"),
    (r"\bnp\.ndarray\[Any, Any\]", "numpy.ndarray"),
    (r"\bnp\.dtype\[Any\]", "numpy.dtype"),
    (r"\bnpt\.", "numpy.typing."),
    (r"\bnp\.", "numpy."),
    (r"(?<![\w.])typing\.", ""),
    (r"(?<![\w.])collections\.abc\.", ""),
    (r"\b_T\b", "T"),
    (r"\bT_co\b", "T"),
)

#: Docstring sections rendered as a bold title with a list of ``name: text`` entries.
ITEM_SECTIONS = ("Args", "Arguments", "Attributes", "Raises")
#: Docstring sections rendered as a bold title with a paragraph.
TEXT_SECTIONS = ("Returns", "Yields", "Note", "Notes")
WIDTH = 100  # a signature longer than this is shown one parameter per line


class GeneratorError(Exception):
    """The reference cannot be generated as it stands (a public name not placed, ...)."""


# -- GitHub heading anchors -------------------------------------------------------------------------------
def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (before de-duplication): lower case, punctuation removed."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


class Anchors:
    """Hands out GitHub's anchors in document order: a repeated slug gets ``-1``, ``-2``..."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, heading: str) -> str:
        slug = github_slug(heading)
        n = self._seen.get(slug)
        self._seen[slug] = 0 if n is None else n + 1
        return slug if n is None else f"{slug}-{n + 1}"


# -- signatures -------------------------------------------------------------------------------------------
def format_annotation(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    for pattern, replacement in ALIASES:
        text = re.sub(pattern, replacement, text)
    return text


def format_default(value: Any, factories: dict[str, str], name: str) -> str:
    if name in factories:
        return factories[name]
    if isinstance(value, type):
        module = value.__module__
        return value.__qualname__ if module in ("builtins", "taskloom") else f"{module}.{value.__qualname__}"
    if isinstance(value, tuple):
        inner = [format_default(v, {}, "") for v in value]
        return f"({inner[0]},)" if len(inner) == 1 else f"({', '.join(inner)})"
    return repr(value)


def format_signature(prefix: str, sig: inspect.Signature, *, drop_first: bool = False,
                     factories: dict[str, str] | None = None, returns: bool = True) -> str:
    """``prefix(params) -> return``, private parameters (``_name``) left out, wrapped when long."""
    params = list(sig.parameters.values())[1 if drop_first else 0:]
    params = [p for p in params if not p.name.startswith("_")]
    factories = factories or {}
    parts: list[str] = []
    positional_only = False
    star_needed = True
    for p in params:
        if p.kind is p.POSITIONAL_ONLY:
            positional_only = True
        elif positional_only:
            parts.append("/")
            positional_only = False
        if p.kind is p.VAR_POSITIONAL:
            star_needed = False
        elif p.kind is p.KEYWORD_ONLY and star_needed:
            parts.append("*")
            star_needed = False
        star = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        annotation = format_annotation(p.annotation)
        text = f"{star}{p.name}" + (f": {annotation}" if annotation else "")
        if p.default is not p.empty:
            default = format_default(p.default, factories, p.name)
            text += f" = {default}" if annotation else f"={default}"
        parts.append(text)
    if positional_only:
        parts.append("/")
    annotation = format_annotation(sig.return_annotation) if returns else ""
    tail = f" -> {annotation}" if annotation else ""
    one_line = f"{prefix}({', '.join(parts)}){tail}"
    if len(one_line) <= WIDTH or not parts:
        return one_line
    body = "".join(f"    {part},\n" for part in parts)
    return f"{prefix}(\n{body}){tail}"


def dataclass_factories(cls: type) -> dict[str, str]:
    """``field(default_factory=dict)`` shows as ``dict()`` instead of ``<factory>``."""
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f"{getattr(f.default_factory, '__name__', 'factory')}()" for f in dataclasses.fields(cls)
            if f.default_factory is not dataclasses.MISSING}


# -- docstrings -> Markdown -------------------------------------------------------------------------------
_ROLE = re.compile(r":(?:meth|func|class|attr|mod|obj|exc|data):`~?([^`]+)`")
_DOUBLE_BACKTICKS = re.compile(r"``([^`]+)``")
_ITEM = re.compile(r"^(\*{0,2}[\w.]+(?:, ?\*{0,2}[\w.]+)*)( \([^)]*\))?:(?: (.*))?$")


def inline(text: str) -> str:
    """reST inline markup to Markdown: ``code`` and :meth:`name` become `code`."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _DOUBLE_BACKTICKS.sub(lambda m: f"`{m.group(1)}`", text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence(block: list[str]) -> list[str]:
    code = textwrap.dedent("\n".join(block)).strip("\n")
    try:
        ast.parse(code)
        language = "python"
    except SyntaxError:
        language = "python" if code.lstrip().startswith(">>>") else "text"
    return [f"```{language}", *code.split("\n"), "```"]


def _section_items(block: list[str]) -> list[str]:
    """``name: text`` entries (continuation lines indented deeper) -> a Markdown list."""
    items: list[list[str]] = []
    base = min((_indent(line) for line in block if line.strip()), default=0)
    for line in block:
        if not line.strip():
            continue
        stripped = line.strip()
        match = _ITEM.match(stripped) if _indent(line) == base else None
        if match:
            names, note, rest = match.group(1), match.group(2) or "", match.group(3) or ""
            names = ", ".join(f"`{n.strip()}`" for n in names.split(","))
            items.append([f"- {names}{inline(note)}:" + (f" {inline(rest)}" if rest else "")])
        elif items:
            items[-1].append(inline(stripped))
        else:
            items.append([f"- {inline(stripped)}"])
    return [" ".join(parts) for parts in items]


def _indented_block(lines: list[str], start: int, level: int) -> tuple[list[str], int]:
    """The lines from ``start`` indented deeper than ``level`` (blank lines included, trailing ones
    dropped), and the index of the first line after them."""
    i, block = start, []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > level):
        block.append(lines[i])
        i += 1
    while block and not block[-1].strip():
        block.pop()
    return block, i


def docstring_markdown(doc: str) -> str:
    """A cleaned docstring (``inspect.getdoc``) as Markdown.

    Handles what taskloom's docstrings use: Google-style sections (``Args:``, ``Returns:``...),
    reST literal blocks (a paragraph ending in ``::``) as fenced code, and reST inline markup.
    """
    lines = doc.expandtabs().split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        title = stripped[:-1] if stripped.endswith(":") and _indent(line) == 0 else ""
        if title in ITEM_SECTIONS or title in TEXT_SECTIONS:
            block, i = _indented_block(lines, i + 1, 0)
            if out and out[-1]:
                out.append("")
            out.append(f"**{title}:**")
            out.append("")
            if title in ITEM_SECTIONS:
                out.extend(_section_items(block))
            else:
                out.append(inline(" ".join(b.strip() for b in block if b.strip())))
            out.append("")
            continue
        if stripped.endswith("::"):
            level = _indent(line)
            lead = stripped[:-2].rstrip()
            if lead:
                out.append(" " * level + inline(lead) + ":")
            block, i = _indented_block(lines, i + 1, level)
            if out and out[-1]:
                out.append("")
            out.extend(_fence(block))
            out.append("")
            continue
        out.append(inline(line.rstrip()))
        i += 1
    text = "\n".join(out).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text)


# -- the reference ------------------------------------------------------------------------------------------
def _public_module_of(cls: type) -> str:
    """``concurrent.futures._base`` -> ``concurrent.futures``: the module a user imports it from."""
    parts = []
    for part in cls.__module__.split("."):
        if part.startswith("_"):
            break
        parts.append(part)
    return ".".join(parts)


def _is_external(cls: type) -> bool:
    return not cls.__module__.startswith("taskloom")


class Reference:
    """Builds the Markdown text; ``missing`` lists public names and members without a docstring."""

    def __init__(self) -> None:
        self.taskloom = importlib.import_module("taskloom")
        self.testing = importlib.import_module("taskloom.testing")
        self.missing: list[str] = []
        self.anchors = Anchors()
        self.documented: dict[type, str] = {}  # public class -> its anchor
        self.returned: set[type] = set()  # non-public classes documented where they are returned
        self._check_placement()

    def _check_placement(self) -> None:
        placed = [name for _, _, names in GROUPS for name in names]
        public = list(self.taskloom.__all__)
        problems = []
        if unplaced := sorted(set(public) - set(placed)):
            problems.append(f"names of taskloom.__all__ in no group of {Path(__file__).name}: {unplaced}")
        if unknown := sorted(set(placed) - set(public)):
            problems.append(f"names placed in a group but not in taskloom.__all__: {unknown}")
        if twice := sorted({n for n in placed if placed.count(n) > 1}):
            problems.append(f"names placed in more than one group: {twice}")
        testing = set(getattr(self.testing, "__all__", ()))
        if testing != set(TESTING_GROUP[2]):
            problems.append(f"taskloom.testing.__all__ is {sorted(testing)}, the testing group lists "
                            f"{sorted(TESTING_GROUP[2])}")
        if stale := sorted(set(MADE_BY) - set(public) - testing):
            problems.append(f"MADE_BY names no longer public: {stale}")
        if stale := sorted(set(REEXPORTED) - set(public)):
            problems.append(f"REEXPORTED names no longer public: {stale}")
        if problems:
            raise GeneratorError("cannot generate the API reference:\n  " + "\n  ".join(problems))

    # -- pieces -----------------------------------------------------------------------------------------------
    def _doc(self, obj: Any, qualname: str) -> str:
        doc = inspect.getdoc(obj)
        if not doc or not doc.strip():
            self.missing.append(qualname)
            return "*No docstring.*"
        return docstring_markdown(doc)

    def _heading(self, level: int, text: str) -> list[str]:
        return [f"{'#' * level} {text}", ""]

    def _code(self, text: str) -> list[str]:
        return ["```python", text, "```", ""]

    def _entry(self, name: str, obj: Any, prefix: str) -> tuple[str, list[str]]:
        """(anchor, lines) of one public name."""
        anchor = self.anchors(f"`{name}`")
        out = self._heading(3, f"`{name}`")
        if name in REEXPORTED:
            out += self._code(format_signature(f"{prefix}{name}", inspect.signature(obj)))
            out += [REEXPORTED[name], ""]
        elif isinstance(obj, type):
            out += self._class(name, obj, prefix=prefix, level=3, made_by=MADE_BY.get(name))
        elif callable(obj):
            asynchronous = "async " if inspect.iscoroutinefunction(obj) else ""
            out += self._code(asynchronous + format_signature(f"{prefix}{name}", inspect.signature(obj)))
            out += [self._doc(obj, name), ""]
            out += self._returned_types(obj, f"`{name}()`", level=4)
        else:
            out += [*self._code(f"{prefix}{name} = {obj!r}"), self._value_doc(name), ""]
        return anchor, out

    def _value_doc(self, name: str) -> str:
        if name == "__version__":
            return "The version of taskloom, as a string (the same as the installed distribution's version)."
        self.missing.append(name)  # a new public constant needs words here
        return "*No description.*"

    def _class(self, name: str, cls: type, *, prefix: str, level: int, made_by: str | None) -> list[str]:
        kind = "exception" if issubclass(cls, BaseException) else "class"
        bases = [b for b in cls.__bases__
                 if b is not object and b.__module__ != "typing" and not b.__name__.startswith("_")]
        facts = [f"*{kind}*"]
        if bases:
            facts.append("bases: " + ", ".join(self._class_ref(b) for b in bases))
        if made_by:
            facts.append(made_by)
        protocols = self._protocols(cls)
        if protocols:
            facts.append("supports: " + ", ".join(protocols))
        out = [" · ".join(facts), ""]
        if made_by is None and self._own_init(cls):
            sig = inspect.signature(cls)
            out += self._code(format_signature(f"{prefix}{name}", sig, factories=dataclass_factories(cls),
                                               returns=False))
        out += [self._doc(cls, name), ""]
        out += self._members(name, cls, level + 1)
        return out

    def _returned_types(self, fn: Any, by: str, level: int) -> list[str]:
        """Classes a public function returns that are not public names themselves (``acquire()`` returns
        an ``Acquired``): documented where they are returned, once, since users handle them."""
        fn = inspect.unwrap(fn)
        annotation = getattr(fn, "__annotations__", {}).get("return")
        namespace = getattr(fn, "__globals__", {})
        if not isinstance(annotation, str):
            return []
        out: list[str] = []
        for word in re.findall(r"[A-Za-z_]\w*", annotation):
            cls = namespace.get(word)
            if not isinstance(cls, type) or _is_external(cls) or cls in self.documented or cls in self.returned:
                continue
            self.returned.add(cls)
            out += self._heading(level, f"`{cls.__name__}`")
            self.anchors(f"`{cls.__name__}`")
            out += self._class(cls.__name__, cls, prefix="", level=level,
                               made_by=f"returned by {by} (a type to use, not exported by `taskloom`)")
        return out

    def _class_ref(self, cls: type) -> str:
        if cls in self.documented:
            return f"[`{cls.__name__}`](#{self.documented[cls]})"
        module = _public_module_of(cls)
        return f"`{cls.__name__}`" if module in ("builtins", "taskloom", "") else f"`{module}.{cls.__name__}`"

    @staticmethod
    def _own_init(cls: type) -> bool:
        """Whether a taskloom class in the MRO defines the constructor (else it is the builtin one)."""
        for klass in cls.__mro__:
            if "__init__" in vars(klass) or "__new__" in vars(klass):
                return not _is_external(klass)
        return False  # object defines __init__: not reached

    @staticmethod
    def _protocols(cls: type) -> list[str]:
        checks = (
            ("__enter__", "`with`"), ("__aenter__", "`async with`"), ("__iter__", "iteration"),
            ("__aiter__", "`async for`"), ("__len__", "`len()`"), ("__getitem__", "indexing"),
            ("__array__", "`numpy.asarray()`"),
        )
        found = []
        for method, label in checks:
            for klass in cls.__mro__:
                if klass.__module__ in ("builtins", "typing"):
                    continue
                if method in vars(klass):
                    found.append(label)
                    break
        return found

    def _members(self, name: str, cls: type, level: int) -> list[str]:
        """Public methods and properties: those of taskloom's own classes in full; those a documented
        public base (or a stdlib base) provides, listed by name."""
        own: list[tuple[str, Any]] = []
        inherited: dict[type, list[str]] = {}
        seen: set[str] = set()
        public_bases = [b for b in cls.__mro__[1:] if b in self.documented]
        for klass in cls.__mro__:
            if klass.__module__ in ("builtins", "typing"):
                continue
            for member, raw in vars(klass).items():
                if member.startswith("_") or member in seen:
                    continue
                if not isinstance(raw, (property, classmethod, staticmethod, types.FunctionType)):
                    continue  # fields, slots and constants: documented as attributes in the docstring
                seen.add(member)
                if klass is cls:
                    own.append((member, raw))
                    continue
                owner = next((b for b in public_bases if hasattr(b, member)), None)
                if owner is None and not _is_external(klass):
                    own.append((member, raw))
                else:
                    inherited.setdefault(owner or klass, []).append(member)
        out: list[str] = []
        for member, raw in own:
            out += self._member(name, cls, member, raw, level)
        for base, members in inherited.items():
            listed = ", ".join(f"`{m}`" for m in members)
            out += [f"Inherited from {self._class_ref(base)}: {listed}.", ""]
        return out

    def _member(self, owner: str, cls: type, member: str, raw: Any, level: int) -> list[str]:
        """One method or property. Its heading reads ``Run: statistics()``, whose anchor
        (``run-statistics``) cannot collide with a class's (``RunStatistics``: ``runstatistics``)."""
        qualname = f"{owner}.{member}"
        label = f"`{member}`" if isinstance(raw, property) else f"`{member}()`"
        self.anchors(f"{owner}: {label}")
        out = self._heading(level, f"{owner}: {label}")
        function = raw.fget if isinstance(raw, property) else getattr(raw, "__func__", raw)
        if isinstance(raw, property):
            returns = format_annotation(inspect.signature(raw.fget).return_annotation) if raw.fget else ""
            out += self._code(f"{qualname}" + (f": {returns}" if returns else ""))
            out += ["*property*" + ("" if raw.fset else ", read-only"), ""]
            doc_source: Any = raw if raw.__doc__ else (self._inherited_property_doc(cls, member) or raw)
        elif isinstance(raw, (classmethod, staticmethod)):
            kind = "classmethod" if isinstance(raw, classmethod) else "staticmethod"
            out += self._code(format_signature(qualname, inspect.signature(raw.__func__),
                                               drop_first=kind == "classmethod"))
            out += [f"*{kind}*", ""]
            doc_source = getattr(cls, member)
        else:
            asynchronous = "async " if inspect.iscoroutinefunction(raw) else ""
            out += self._code(asynchronous + format_signature(qualname, inspect.signature(raw), drop_first=True))
            doc_source = getattr(cls, member)
        out += [self._doc(doc_source, qualname), ""]
        if function is not None:
            out += self._returned_types(function, f"`{qualname}()`", level)
        return out

    @staticmethod
    def _inherited_property_doc(cls: type, member: str) -> Any:
        for klass in cls.__mro__[1:]:
            raw = vars(klass).get(member)
            if isinstance(raw, property) and raw.__doc__:
                return raw
        return None

    def _testing_plugin(self) -> tuple[str, list[str]]:
        """The pytest plugin's marker and option, read from the plugin's own hooks."""
        options: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        markers: list[str] = []

        class Parser:
            def addoption(self, *names: str, **kwargs: Any) -> None:
                options.append((names, kwargs))

        class Config:
            def addinivalue_line(self, name: str, line: str) -> None:
                if name == "markers":
                    markers.append(line)

        self.testing.pytest_addoption(Parser())
        self.testing.pytest_configure(Config())
        title = "pytest plugin: `@pytest.mark.stress`"
        anchor = self.anchors(title)
        out = self._heading(3, title)
        out += [
            "Registered when taskloom is installed (a `pytest11` entry point; `-p taskloom.testing` loads it "
            "explicitly). A test marked `@pytest.mark.stress(...)` is run through `stress()`, with the marker's "
            "keyword arguments as `stress()`'s options.",
            "",
        ]
        for line in markers:
            signature, _, text = line.partition(": ")
            out += self._code(f"@pytest.mark.{signature}")
            out += [inline(text[:1].upper() + text[1:]) + ".", ""]
        for names, kwargs in options:
            flag = ", ".join(f"`{n}`" for n in names)
            kind = getattr(kwargs.get("type"), "__name__", "")
            out += [f"Command-line option {flag}" + (f" (`{kind}`)" if kind else "") + f": {kwargs.get('help', '')}.",
                    ""]
        return anchor, out

    # -- the document -----------------------------------------------------------------------------------------
    def render(self) -> str:
        """The whole reference. Two passes: the first finds the anchor of every class heading (GitHub
        de-duplicates ``pipeline``/``Pipeline`` as ``pipeline``/``pipeline-1``), the second links to them."""
        groups = [*GROUPS, TESTING_GROUP]
        for _, _, names in groups:  # which classes get a heading: known before anything is written
            for name in names:
                obj = getattr(self._module_of(name), name)
                if isinstance(obj, type):
                    self.documented[obj] = github_slug(f"`{name}`")
        self._render(groups)
        self.missing = []
        return self._render(groups)

    def _module_of(self, name: str) -> Any:
        return self.testing if name in TESTING_GROUP[2] else self.taskloom

    def _render(self, groups: list[tuple[str, str, tuple[str, ...]]]) -> str:
        self.anchors = Anchors()
        self.returned = set()
        self.anchors("taskloom API reference")
        self.anchors("Contents")
        body: list[str] = []
        toc: list[str] = []
        for title, intro, names in groups:
            testing = title == TESTING_GROUP[0]
            prefix = "taskloom.testing." if testing else "taskloom."
            group_anchor = self.anchors(title)
            body += self._heading(2, title)
            if intro:
                body += [intro, ""]
            links = []
            for name in names:
                obj = getattr(self._module_of(name), name)
                anchor, entry = self._entry(name, obj, prefix)
                if isinstance(obj, type):
                    self.documented[obj] = anchor
                links.append(f"[`{name}`](#{anchor})")
                body += entry
            if testing:
                anchor, entry = self._testing_plugin()
                links.append(f"[pytest plugin](#{anchor})")
                body += entry
            toc.append(f"- [{title}](#{group_anchor}): " + " · ".join(links))
        head = [
            f"<!-- Generated by `{COMMAND}` from the docstrings in src/taskloom. Do not edit by hand. -->",
            "",
            "# taskloom API reference",
            "",
            f"> Generated by `{COMMAND}` (or `make docs`) from the docstrings in `src/taskloom`: do not edit "
            "this file by hand; edit the docstrings and regenerate it. `tests/test_docs.py` fails when it is "
            "out of date.",
            "",
            f"Every public name of `taskloom` (`taskloom.__all__`, version {self.taskloom.__version__}) and of "
            "`taskloom.testing`. Signatures are shown as written in the source, with private parameters left out.",
            "",
            "## Contents",
            "",
            *toc,
            "",
        ]
        text = "\n".join(head + body)
        return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def generate() -> str:
    """The text of docs/api.md as the code stands now."""
    return Reference().render()


def undocumented() -> list[str]:
    """Public names and members that have no docstring (the reference says "No docstring")."""
    reference = Reference()
    reference.render()
    return reference.missing


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside fenced code blocks."""
    out = []
    fenced = False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match and not fenced:
            out.append((len(match.group(1)), match.group(2)))
    return out


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if docs/api.md is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"where to write (default: {OUTPUT})")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        text = generate()
    except GeneratorError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                   str(args.output), "generated"))
        print(f"{args.output} is stale: run {COMMAND}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote {args.output} ({len(text):,} characters)")
    return 0


if __name__ == "__main__":
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))  # the checkout's taskloom, even without an install
    sys.exit(main())

