"""Randomization lists as data: generate, review, approve, activate, check, verify, extend, export;
one module per use case, and storage.py for what they share.

Who: the unblinded statistician (LIST_MANAGE); the command line for generation and verification.
Blinded roles only ever get `stratum_overview` (used slots per stratum and a capacity state).

Storage. Every slot holds its arm, block number and block size sealed with AES-256-GCM, bound to
(trial, list label, stratum, position), next to an opaque random randomization number. Two digests
are recorded with every version of a list (RND-02, RND-10):

* the *content* digest of docs/randomization.md §7, over the plaintext list, which `verify_lists`
  recomputes by regenerating the list from the seed and by opening every slot (both audited);
* the *storage* digest, over the stored rows (stratum, position, randomization number, SHA-256 of
  the ciphertext), which `check_integrity` recomputes without any key (at start-up, daily, on
  demand), so that a changed, added or removed slot blocks randomization (ACC-15).

Each slot also carries a MAC (`crypto.SlotMacer`) over its position, randomization number and the
SHA-256 of its ciphertext: an allocation checks the MAC and opens the record of the one slot it
uses, so that its cost does not grow with the list (issue 16), and a slot changed before its turn
is still caught before it is used. Slots stored before migration 0012 have no MAC; an allocation
from their stratum re-checks the whole stratum against its storage digest, as before.
"""
