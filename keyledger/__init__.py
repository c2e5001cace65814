"""keyledger's composition root: settings and the wiring of store, read models and API."""
