"""Drug supply: kit lists, site stock, shipments, receipt, status changes, labels and reconciliation;
one module per use case, and kit_rules.py for the rules they share.

Blinding (BLD-03, BLD-04, BLD-05, BLD-12):
* kit numbers are random (kits.numbers); the kit -> arm map exists only sealed, one ciphertext per
  kit bound to its trial and number;
* kit lists are built in balanced blocks across arms, and shipments take the same number of kits
  of each arm (weighted by the ratio), chosen at random within each arm: a site's stock never
  drifts towards one arm, and nothing about a shipment depends on the last subject randomized;
* blinded roles see counts and statuses only, never split by arm. The system reads arms (to
  balance a shipment, to allocate) through `arm_access`, which audits every read.

Every status change is a KitEvent (who, when, why) plus an audit entry, in the same transaction;
`kit_rules.move_kit` is the one way a kit changes status.
"""
