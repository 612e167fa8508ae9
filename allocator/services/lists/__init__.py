"""Randomization lists: generate, review, approve and activate, check integrity, extend, export,
and the design quality report (RND-01..RND-13, ACC-12)."""
