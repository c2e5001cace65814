from tests.api.conftest import backend, server

__all__ = ["backend", "server"]  # one keyledger per backend, as the API tests have
