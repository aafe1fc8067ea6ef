"""The tests of CPython's test_concurrent_futures that do not apply to ``taskloom.Executor``, and why.

Keyed by ``<class that defines the test>.<test name>`` in CPython's file; each entry is left out of
every executor variant that inherits it. ``tests/test_cpython_futures.py`` checks that every entry
still names a test of the file, and that docs/executor.md lists each one with its reason.

Three kinds of reasons, and nothing else belongs here:

* the test reads a private attribute of the stdlib's class (``_threads``, ``_processes``,
  ``_max_workers``, ``_mp_context``, ``_executor_manager_thread``...) or checks for a private class;
* the test builds ``concurrent.futures.ThreadPoolExecutor`` / ``ProcessPoolExecutor`` by name, so it
  tests the stdlib, whatever executor the suite runs against;
* the test starts a new interpreter whose script imports the executor class by name from
  ``concurrent.futures``, which a swapped class cannot reach: each of these has a port in
  ``tests/test_cpython_futures.py`` that runs the same script with ``taskloom.Executor``.
"""

from __future__ import annotations

PRIVATE = "reads a private attribute of the stdlib's class"
BY_NAME = "builds the stdlib's executor by name, so it tests the stdlib, not the executor under test"
SCRIPT = "its child interpreter imports the stdlib's class by name; ported as tests/test_cpython_futures.py::"

NOT_APPLICABLE: dict[str, str] = {
    # -- every executor ------------------------------------------------------------------------------
    "ExecutorTest.test_max_workers_negative":
        "checks the wording of the stdlib's message about its `max_workers` argument; taskloom's "
        "argument is `workers=`, and 0 or less raises ValueError naming it "
        "(tests/test_executor.py::test_bad_options_are_rejected)",
    "ExecutorShutdownTest.test_interpreter_shutdown":
        f"{SCRIPT}test_port_interpreter_shutdown",
    "ExecutorShutdownTest.test_submit_after_interpreter_shutdown":
        f"{SCRIPT}test_port_submit_after_interpreter_shutdown",
    "ExecutorShutdownTest.test_hang_gh83386":
        f"{SCRIPT}test_port_hang_gh83386",
    # -- threads ---------------------------------------------------------------------------------------
    "ThreadPoolShutdownTest.test_threads_terminate": f"{PRIVATE} (`_threads`)",
    "ThreadPoolShutdownTest.test_context_manager_shutdown": f"{BY_NAME}; reads `_threads`",
    "ThreadPoolShutdownTest.test_del_shutdown": f"{BY_NAME}; reads `_threads`",
    "ThreadPoolShutdownTest.test_shutdown_no_wait": f"{BY_NAME}; reads `_threads`",
    "ThreadPoolShutdownTest.test_thread_names_assigned":
        f"{BY_NAME} (`thread_name_prefix`); reads `_threads`",
    "ThreadPoolShutdownTest.test_thread_names_default": f"{BY_NAME}; reads `_threads`",
    "ThreadPoolShutdownTest.test_cancel_futures_wait_false": f"{SCRIPT}test_port_cancel_futures_wait_false",
    "ThreadPoolExecutorTest.test_default_workers": f"{PRIVATE} (`_max_workers`)",
    "ThreadPoolExecutorTest.test_saturation": f"{PRIVATE} (`_max_workers`, `_threads`)",
    "ThreadPoolExecutorTest.test_idle_thread_reuse": f"{PRIVATE} (`_threads`)",
    "ThreadPoolExecutorTest.test_hang_global_shutdown_lock":
        f"{BY_NAME} (both ThreadPoolExecutor and ProcessPoolExecutor)",
    # -- processes -------------------------------------------------------------------------------------
    "ProcessPoolShutdownTest.test_processes_terminate": f"{PRIVATE} (`_processes`)",
    "ProcessPoolShutdownTest.test_context_manager_shutdown": f"{BY_NAME}; reads `_processes`",
    "ProcessPoolShutdownTest.test_del_shutdown":
        f"{BY_NAME}; reads `_processes`, `_call_queue`, `_executor_manager_thread`",
    "ProcessPoolShutdownTest.test_shutdown_no_wait":
        f"{BY_NAME}; reads `_processes`, `_call_queue`, `_executor_manager_thread`",
    "ProcessPoolExecutorTest.test_killed_child":
        f"{PRIVATE} (`_processes`, to kill a worker); and a killed worker deliberately does not break a "
        "taskloom executor: its task is run again once, then fails with WorkerCrashed, a "
        "BrokenProcessPool (tests/test_executor.py::test_a_crash_is_a_broken_process_pool_and_the_executor_goes_on)",
    "ProcessPoolExecutorTest.test_traceback":
        "checks that the cause is `concurrent.futures.process._RemoteTraceback`, a private class; "
        "taskloom's cause is `taskloom.RemoteTraceback` with the same `tb` text "
        "(tests/test_executor.py::test_future_raises_the_tasks_own_exception)",
    "ProcessPoolExecutorTest.test_saturation": f"{PRIVATE} (`_max_workers`, `_processes`)",
    "ProcessPoolExecutorTest.test_idle_process_reuse_one": f"{PRIVATE} (`_max_workers`, `_processes`)",
    "ProcessPoolExecutorTest.test_idle_process_reuse_multiple": f"{PRIVATE} (`_max_workers`, `_processes`)",
    "ProcessPoolExecutorTest.test_max_tasks_per_child":
        f"{PRIVATE} (`_processes`); its fork branch expects a ValueError for `max_tasks_per_child` with "
        "fork, which taskloom allows (`Processes(max_tasks_per_worker=)` recycles forked workers too)",
    "ProcessPoolExecutorTest.test_max_tasks_per_child_defaults_to_spawn_context": f"{PRIVATE} (`_mp_context`)",
    "ExecutorDeadlockTest.test_shutdown_deadlock_pickle":
        f"{PRIVATE} (`_executor_manager_thread`); the rest of it (a pickling error after "
        "`shutdown(wait=False)`) is tests/test_executor.py::test_pickling_faults_raise_the_stdlib_types",
}
