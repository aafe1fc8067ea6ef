"""The fault battery: crashed workers, timeouts, (un)pickling faults, signals, memory, bad input.

Every test here injects a real fault (SIGKILL, a segfault, ``os._exit``, an object that raises
while being pickled, a signal to a parent process...) and asserts the error type, the message,
the exact accounting of items, and that no process is left behind. Task functions that run in
worker processes live in ``tests.faults.tasks``; waiting and process tools in ``tests.faults.support``.
"""
