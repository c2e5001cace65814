"""Tamper evidence for the event store: an HMAC-SHA256 chain over every stored event.

Each stored event gets one link, written in the same transaction as the event:
`mac_i = HMAC(k, mac_prev || position || originator_id || originator_version || topic || state)`,
where `mac_prev` is the link of the previous *stored* event (gaps in positions are
not tampering) and the first link chains from a genesis value derived from the key.
`verify.verify_chain` walks events and links in position order and names the
first position where they disagree. See the README's "Tamper evidence" section.
"""
