"""keyledger's composition root: settings and the wiring of store, read models and API.

The only package that reads `Settings` (`keyledger.settings`). May import every package below
it: `api`, `adapters`, `projections`, `domain`; never `scripts`.
"""
