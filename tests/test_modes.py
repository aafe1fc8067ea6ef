"""Mode objects and their parsing (``taskloom._modes``)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

import taskloom as tl
from taskloom import _system
from taskloom._modes import parse_mode, parse_size
from taskloom._system import usable_cpus

NAMES = {
    "sequential": tl.Sequential,
    "threads": tl.Threads,
    "processes": tl.Processes,
    "async": tl.Async,
    "auto": tl.Auto,
}


# -- parse_mode ------------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize(("text", "cls"), list(NAMES.items()))
def test_parse_mode_strings(text: str, cls: type) -> None:
    mode = parse_mode(text)
    assert type(mode) is cls
    assert mode.name == text
    assert mode == cls()
    assert type(parse_mode(f"  {text.upper()} ")) is cls


@pytest.mark.smoke
@pytest.mark.parametrize(
    "mode",
    [tl.Sequential(), tl.Threads(idle_timeout=5.0), tl.Processes(max_tasks_per_worker=10), tl.Async(), tl.Auto()],
    ids=lambda m: type(m).__name__,
)
def test_parse_mode_objects_pass_through(mode: object) -> None:
    assert parse_mode(mode) is mode  # type: ignore[arg-type]


@pytest.mark.smoke
def test_parse_mode_unknown_string_names_the_choices() -> None:
    with pytest.raises(ValueError, match="mode") as info:
        parse_mode("gpu")
    message = str(info.value)
    assert "'gpu'" in message
    for name in NAMES:
        assert repr(name) in message


@pytest.mark.smoke
def test_parse_mode_dask() -> None:
    from taskloom._modes import Dask

    assert parse_mode("dask") == Dask()
    assert parse_mode(Dask(address="tcp://h:8786")) == Dask(address="tcp://h:8786")
    assert Dask(address="tcp://a:1") != Dask(address="tcp://b:1")


@pytest.mark.smoke
@pytest.mark.parametrize("bad", [42, None, b"threads", ["threads"]])
def test_parse_mode_other_types_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="mode"):
        parse_mode(bad)  # type: ignore[arg-type]


@pytest.mark.smoke
def test_parse_mode_without_auto() -> None:
    with pytest.raises(ValueError, match="auto"):
        parse_mode("auto", allow_auto=False)
    with pytest.raises(ValueError, match="auto"):
        parse_mode(tl.Auto(), allow_auto=False)
    with pytest.raises(ValueError, match="mode") as info:
        parse_mode("gpu", allow_auto=False)
    assert "'auto'" not in str(info.value)
    assert type(parse_mode("threads", allow_auto=False)) is tl.Threads


# -- mode objects --------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_processes_bogus_start_method() -> None:
    with pytest.raises(ValueError, match="start_method"):
        tl.Processes(start_method="bogus")


@pytest.mark.smoke
@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_processes_valid_start_methods(method: str) -> None:
    assert tl.Processes(start_method=method).resolved_start_method == method


@pytest.mark.smoke
def test_processes_default_start_method() -> None:
    method = tl.Processes().resolved_start_method
    assert method in multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux"):
        assert method == "forkserver"
    assert method != "fork"


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_tasks_per_worker": 0}, ValueError, "max_tasks_per_worker"),
        ({"crash_retries": -1}, ValueError, "crash_retries"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout"),
        ({"initializer": 42}, TypeError, "initializer"),
        ({"max_memory": "lots"}, ValueError, "max_memory"),
        ({"max_memory": 0}, ValueError, "max_memory"),
        ({"max_result_size": "-1MiB"}, ValueError, "max_result_size"),
    ],
)
def test_processes_bad_knobs(kwargs: dict, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        tl.Processes(**kwargs)


@pytest.mark.smoke
@pytest.mark.parametrize("idle_timeout", [0, -1.5, "60", True])
def test_threads_bad_idle_timeout(idle_timeout: object) -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        tl.Threads(idle_timeout=idle_timeout)  # type: ignore[arg-type]


@pytest.mark.smoke
def test_modes_are_frozen_and_hashable() -> None:
    mode = tl.Processes(max_memory="2GiB", max_tasks_per_worker=5)
    assert hash(mode) == hash(tl.Processes(max_memory="2GiB", max_tasks_per_worker=5))
    assert mode == tl.Processes(max_memory="2GiB", max_tasks_per_worker=5)
    assert mode != tl.Processes()
    with pytest.raises(AttributeError):
        mode.max_tasks_per_worker = 6  # type: ignore[misc]
    assert len({tl.Threads(), tl.Threads(), tl.Sequential(), tl.Async(), tl.Auto()}) == 4


@pytest.mark.smoke
def test_default_workers() -> None:
    cpus = usable_cpus()
    assert cpus >= 1
    assert tl.Sequential().default_workers() == 1
    assert tl.Threads().default_workers() == min(32, cpus + 4)
    assert tl.Processes().default_workers() == cpus
    assert tl.Async().default_workers() == 100


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "50000 100000\n"}, 0.5),                       # v2: half a CPU
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),                        # v2: no quota
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),     # v1: no quota
        ({}, None),                                                    # no cgroup files at all
    ],
)
def test_cgroup_cpu_quota_is_read(tmp_path: Path, files: dict[str, str], cpus: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _system.cgroup_cpu_limit(tmp_path) == cpus


def test_a_container_quota_sizes_the_default_pools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # what a container limited to 0.5 CPU sees
    monkeypatch.setattr(_system, "CGROUP_ROOT", tmp_path)
    usable_cpus.cache_clear()
    try:
        assert usable_cpus() == 1
        assert tl.Processes().default_workers() == 1
        assert tl.Threads().default_workers() == 5  # min(32, 1 + 4)
    finally:
        usable_cpus.cache_clear()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_cpu_affinity_sizes_the_default_pools() -> None:
    # A fresh interpreter pinned to one CPU, as `taskset -c 0 python ...` would start it.
    code = ("import os, multiprocessing, taskloom as tl; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "print(multiprocessing.cpu_count(), tl.Processes().default_workers(), tl.Threads().default_workers())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    host, processes, threads = map(int, out.stdout.split())
    assert host == os.cpu_count()
    assert (processes, threads) == (1, 5)


# -- parse_size ----------------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GiB", 2 * 1024**3),
        ("2gib", 2 * 1024**3),
        (" 2 GiB ", 2 * 1024**3),
        ("512MiB", 512 * 1024**2),
        ("2GB", 2 * 1000**3),
        ("1.5KiB", 1536),
        ("10k", 10_000),
        ("3MB", 3_000_000),
        ("1TiB", 1024**4),
        ("4096", 4096),
        ("100B", 100),
        (4096, 4096),
        (None, None),
    ],
)
def test_parse_size(text: str | int | None, size: int | None) -> None:
    assert parse_size(text, "max_memory") == size


@pytest.mark.smoke
@pytest.mark.parametrize("bad", ["", "0", "0GiB", "-1GB", "2XB", "GiB", "two GiB", "1.2.3MB", 0, -5])
def test_parse_size_rejects_bad_values(bad: str | int) -> None:
    with pytest.raises(ValueError, match="max_memory"):
        parse_size(bad, "max_memory")


@pytest.mark.smoke
@pytest.mark.parametrize("bad", [True, 1.5, [1]])
def test_parse_size_rejects_wrong_types(bad: object) -> None:
    with pytest.raises(TypeError, match="max_memory"):
        parse_size(bad, "max_memory")  # type: ignore[arg-type]
