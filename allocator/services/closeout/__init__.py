"""Close-out: the database lock, the final unblinding and the
unblinded releases that follow it (UNB-10, BLD-09, REP-06)."""
