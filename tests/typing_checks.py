"""Checked by mypy (``make typecheck``), never run: the public signatures give precise types.

Each ``assert_type`` fails the type check if the type a user's checker sees is not exactly this;
each ``type: ignore`` fails it (``warn_unused_ignores``) if the bad call were accepted.
"""

from __future__ import annotations

from typing_extensions import assert_type

import taskloom as tl


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


async def fetch(url: str) -> bytes:
    return url.encode()


assert_type(tl.map(square, [1, 2]), list[int])
assert_type(tl.map(square, [1, 2], on_error="collect"), list[tl.Outcome[int]])
assert_type(tl.map(square, range(3), mode="threads", workers=4, timeout=2.0, retries=1), list[int])
assert_type(tl.map(fetch, ["a"], mode="async"), list[bytes])
assert_type(tl.imap(square, [1]), tl.Run[int])
assert_type(tl.imap(square, [1], on_error="collect", ordered=False), tl.Run[tl.Outcome[int]])
assert_type(tl.imap(fetch, ["a"], on_error="collect"), tl.Run[tl.Outcome[bytes]])
assert_type(tl.starmap(add, [(1, 2)]), list[int])
assert_type(tl.starmap(add, [(1, 2)], on_error="collect"), list[tl.Outcome[int]])

options: tl.RunOptions = {"mode": tl.Processes(crash_retries=2), "workers": 2, "chunksize": "auto"}
assert_type(tl.map(square, [1], **options), list[int])


async def inside_a_loop() -> None:
    assert_type(await tl.amap(fetch, ["a"]), list[bytes])
    assert_type(await tl.amap(square, [1], on_error="collect"), list[tl.Outcome[int]])
    assert_type(tl.aimap(fetch, ["a"], workers=10), tl.AsyncRun)


# Bad calls a type checker must refuse:
tl.map(square, [1], worker=2)  # type: ignore[call-overload]
tl.map(square, [1], timeout="5s")  # type: ignore[call-overload]
tl.map(square, ["not an int"])  # type: ignore[arg-type]
bad: tl.RunOptions = {"mode": "threads", "retries": "3"}  # type: ignore[typeddict-item]
