"""Close-out: the database lock, the final unblinding and the unblinded data it releases (UNB-10,
BLD-09, REP-06, REP-08); state.py holds the two signed steps, releases.py the releases.

The trial walks ACTIVE -> LOCKED -> UNBLINDED, one signed step at a time: the trial manager locks the
database ("database lock"), then the unblinded statistician unblinds ("final unblinding"). A locked
trial takes no new data (no randomization, dispensing, administration or correction); emergency
unblinding stays possible in every state. The unblinded listing — subject, stratum used and
corrected, randomization time, kits, arm — exists only once the trial is UNBLINDED (409 before), and
each release of it is signed and audited. Before that, the unblinded statistician may release
signed, audited interim packages for the DSMB's looks.
"""
