"""Facts: what hactl reads from a host. ``model`` holds the data; one module per domain holds
the shell that reads it and a pure parser. Only :mod:`hactl.probe` runs them."""
