"""Webhooks (SPEC 8.3): where they may point, how they are signed, and their delivery state and worker."""
