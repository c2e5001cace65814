from uuid import uuid4

import pytest

from domain import credentials
from domain.errors import MalformedSecret


def test_a_secret_names_its_key_and_carries_the_prefix():
    key_id = uuid4()

    secret = credentials.generate_secret(key_id)

    assert secret.startswith("kl_")
    assert credentials.key_id_of(secret) == key_id


def test_secrets_of_one_key_differ_and_carry_256_bits_of_randomness():
    key_id = uuid4()
    secrets = {credentials.generate_secret(key_id) for _ in range(200)}

    assert len(secrets) == 200
    # 43 base62 characters hold the random part: log2(62**43) > 256.
    assert 62**43 > 2**256
    assert len(next(iter(secrets))) == credentials.SECRET_LENGTH


def test_a_single_mistyped_character_fails_the_checksum():
    secret = credentials.generate_secret(uuid4())
    position = 30
    replacement = "A" if secret[position] != "A" else "B"
    mistyped = secret[:position] + replacement + secret[position + 1 :]

    with pytest.raises(MalformedSecret, match="checksum"):
        credentials.key_id_of(mistyped)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],
        lambda s: s + "x",
        lambda s: "kx_" + s[3:],
        lambda s: s[:10] + "-" + s[11:],
        lambda s: "",
    ],
)
def test_truncated_or_foreign_strings_are_refused_without_lookup(mangle):
    with pytest.raises(MalformedSecret):
        credentials.key_id_of(mangle(credentials.generate_secret(uuid4())))


def test_digest_is_one_way_and_stable():
    secret = credentials.generate_secret(uuid4())

    assert credentials.digest(secret) == credentials.digest(secret)
    assert secret not in credentials.digest(secret)
    assert len(credentials.digest(secret)) == 64


def test_fingerprint_differs_from_the_digest():
    d = credentials.digest(credentials.generate_secret(uuid4()))

    fp = credentials.fingerprint(d)

    assert fp.startswith("fp_")
    assert fp[3:] not in d


def test_forged_ids_never_evict_cached_keys():
    from uuid import uuid4

    from adapters.change_feed import MemoryChangeFeed
    from adapters.credential_cache import CredentialCache
    from domain.application import KeyLedger

    ledger = KeyLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    created = ledger.create_workspace("acme", "starter")
    cache = CredentialCache(ledger, MemoryChangeFeed(), max_entries=10, max_missing=3)
    assert cache.get(created.admin_key.id) is not None

    for _ in range(50):
        assert cache.get(uuid4()) is None
    loads = cache.loads
    found = cache.get(created.admin_key.id)

    assert found is not None and cache.loads == loads  # still cached: no store read
    assert len(cache._missing) == 3
