"""Accounts: users, roles, API tokens, and their
administration."""
