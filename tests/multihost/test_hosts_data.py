"""Data across hosts: numpy arguments and SharedArray scattered once, results of megabytes, and a
function of a script's ``__main__`` that the worker hosts cannot import (it travels by value).

One cluster for the module (nothing here breaks it); the client is in the root namespace, the
scheduler and the workers on hosts of their own, so every byte crosses the bed's links.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
from tests.helpers import assert_session_empty, run_in_own_session

from . import tasks
from .bed import ROOT, Cluster

pytestmark = pytest.mark.dask


@pytest.fixture
def scatters(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The type of what each ``Client.scatter`` call (of any client in this process) sent."""
    from distributed import Client

    calls: list[str] = []
    original = Client.scatter

    def counting(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(type(data).__name__)
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(Client, "scatter", counting)
    return calls


def both_hosts(cluster: Cluster, workers: set[str]) -> None:
    hosts = cluster.worker_hosts()
    assert {hosts[w].name for w in workers} == {"worker1", "worker2"}, workers


def test_a_large_numpy_argument_crosses_once_to_the_hosts(shared_cluster: Cluster, scatters: list[str]) -> None:
    import numpy as np

    big = np.ones(2_000_000)  # 16 MB: in every task's graph, Dask would warn "Sending large graph"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = tl.map(tasks.array_total, [(big, i) for i in range(12)], mode=tl.Dask(address=shared_cluster.address),
                         chunksize=1)
    assert [r[0] for r in results] == [2_000_000.0 + i for i in range(12)]
    assert scatters == ["ndarray"]  # once for the run, not once per task
    assert not [w for w in caught if "large graph" in str(w.message)], [str(w.message) for w in caught]
    both_hosts(shared_cluster, {r[1] for r in results})


def test_a_shared_array_is_scattered_once_to_a_remote_cluster(shared_cluster: Cluster, scatters: list[str]) -> None:
    import numpy as np

    data = np.arange(200_000, dtype=float)
    mode = tl.Dask(address=shared_cluster.address)
    with tl.SharedArray.from_numpy(data) as arr:
        blocks = [(arr, lo, lo + 10_000) for lo in range(0, 200_000, 10_000)]
        first = tl.map(tasks.block_sum, blocks, mode=mode, chunksize=1)
        second = tl.map(tasks.block_sum, blocks, mode=mode, chunksize=1)  # a later run reuses it
    expected = [float(data[lo:lo + 10_000].sum()) for lo in range(0, 200_000, 10_000)]
    assert [r[0] for r in first] == expected
    assert [r[0] for r in second] == expected
    assert scatters == ["ndarray"]  # the shared memory's data, once per connection
    both_hosts(shared_cluster, {r[1] for r in first + second})


def test_results_of_megabytes_come_back_whole(shared_cluster: Cluster) -> None:
    results = tl.map(tasks.megabytes, [4] * 8, mode=tl.Dask(address=shared_cluster.address), chunksize=1)
    pattern = bytes(range(256)) * (4 * 4096)
    assert all(value == pattern for value, _ in results)  # 4 MiB each, byte for byte
    both_hosts(shared_cluster, {w for _, w in results})


def test_a_function_of_the_main_script_travels_by_value(shared_cluster: Cluster, tmp_path: Path) -> None:
    """The script is on the client's machine only; no __main__ guard; its globals and classes go along."""
    script = tmp_path / "score_on_cluster.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        import taskloom as tl

        OFFSET = 1000

        class Scored:
            def __init__(self, value, where):
                self.value, self.where = value, where

        def score(x):
            from distributed import get_worker
            return Scored(x ** 3 + OFFSET, get_worker().address)

        results = tl.map(score, range(30), mode=tl.Dask(address=sys.argv[1]), chunksize=1)
        print(json.dumps([[r.value, r.where] for r in results]))
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # the script's own folder is not on the workers
    env.pop("TASKLOOM_DASK_ADDRESS", None)
    code, out, err, sid = run_in_own_session([sys.executable, str(script), shared_cluster.address], cwd=tmp_path,
                                             env=env, timeout=120)
    assert code == 0, err[-3000:]
    results = json.loads(out.strip().splitlines()[-1])
    assert [v for v, _ in results] == [x ** 3 + 1000 for x in range(30)]
    both_hosts(shared_cluster, {w for _, w in results})
    assert_session_empty(sid)


def test_io_workers_above_the_clusters_threads_all_run_at_once_on_both_hosts(shared_cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    """workers=12 on two single-threaded workers: 12 tasks that wait for each other all meet."""
    results = tl.map(tasks.meet, [(str(tmp_path), 12)] * 12, mode=tl.Dask(address=shared_cluster.address),
                     workers=12, chunksize=1)
    assert [met for met, _ in results] == [True] * 12
    both_hosts(shared_cluster, {w for _, w in results})
