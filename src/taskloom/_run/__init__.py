"""The one engine every run goes through, split by job.

* ``_open``: ``open_run`` turns a function, an input and ``Options`` into a ``Run`` (the one way
  ``map``, ``imap``, ``amap``, ``Executor`` and pipeline stages start work);
* ``_run``: ``Run``, the window over the input, dispatch to a backend and delivery in order;
* ``_policy``: retries, backoff, the rate limit, deadlines and the clock they read;
* ``_failures``: how a failed item is described (pure functions from facts to an error);
* ``_chunker``: batch sizes from measured task times.
"""
