"""``python -m taskloom._cli``: the same as the ``taskloom`` console script."""

from taskloom._cli import main

raise SystemExit(main())
