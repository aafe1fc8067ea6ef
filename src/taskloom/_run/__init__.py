"""The one engine every run goes through, split by job.

* ``_open``: ``open_run`` turns a function, an input and ``Options`` into a ``Run`` (the one way
  ``map``, ``imap``, ``amap``, ``Executor`` and pipeline stages start work);
* ``_run``: ``Run``, the scheduler: the consumer's loop, events, acting on decisions, the switch;
* ``_interfaces``: what a run takes from outside (``PushSource``, ``Listener``, ``Watcher`` and
  ``Switch``), re-exported by ``_run``;
* ``_intake``: the input, read only as far as the window asks;
* ``_delivery``: the window's groups and the results handed out (in order, or as done);
* ``_dispatch``: batches in flight and where, their deadlines, retries waiting out their backoff;
* ``_failures``: what a failed, timed-out or lost task becomes (pure decisions) and its error;
* ``_policy``: retries, backoff, the rate limit, deadlines and the clock they read;
* ``_chunker``: batch sizes from measured task times;
* ``_tally``: the statistics (a ``_stats.Recorder``) and the progress listener.
"""
