"""keyledger's domain: aggregates, events and the rules they enforce.

Nothing here knows about HTTP or SQL; the application service talks to the
event store only through the `eventsourcing` library.
"""
