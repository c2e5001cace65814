import pytest

from domain.errors import MalformedScope, UnknownResource
from domain.scopes import ScopeCatalog

CATALOG = ScopeCatalog()


def test_write_includes_read_of_the_same_resource_only():
    effective = CATALOG.effective(["write:nodes"])

    assert effective == {"write:nodes", "read:nodes"}


def test_admin_includes_every_scope_of_the_catalog():
    effective = CATALOG.effective(["admin"])

    assert {"read:edges", "write:livedata", "read:events", "admin"} <= effective
    assert effective == CATALOG.all_scopes()


def test_effective_scopes_are_the_union_of_granted_ones():
    assert CATALOG.effective(["read:nodes", "write:edges"]) == {"read:nodes", "read:edges", "write:edges"}


def test_read_does_not_include_write():
    assert "write:nodes" not in CATALOG.effective(["read:nodes"])


@pytest.mark.parametrize("scope", ["read", "read:", "READ:nodes", "delete:nodes", "read:nodes:x", "", " admin", 7])
def test_malformed_scopes_are_refused(scope):
    with pytest.raises(MalformedScope):
        CATALOG.parse(scope)


def test_unknown_resource_is_refused_and_named():
    with pytest.raises(UnknownResource, match="datasets"):
        CATALOG.parse("read:datasets")


def test_a_configured_catalog_replaces_the_default_but_keeps_events():
    catalog = ScopeCatalog.of(["datasets", "jobs"])

    assert catalog.parse("write:jobs") == "write:jobs"
    assert catalog.parse("read:events") == "read:events"
    with pytest.raises(UnknownResource):
        catalog.parse("read:nodes")


def test_parse_all_collapses_duplicates_in_a_stable_order():
    assert CATALOG.parse_all(["write:nodes", "read:edges", "write:nodes"]) == ["read:edges", "write:nodes"]


def test_catalog_refuses_a_bad_resource_name():
    with pytest.raises(UnknownResource):
        ScopeCatalog.of(["Data Sets"])
