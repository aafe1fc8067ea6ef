"""Where work runs. Each backend only moves batches there and results back (see ``_base``)."""
