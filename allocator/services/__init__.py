"""Use cases: one function per thing a user does. Services own the transaction; nothing else commits.

Every service takes a `ServiceContext` (database, key ring, settings, audit log, clock) and an
`Actor` explicitly, validates its typed inputs, raises a `DomainError` subclass on refusal, and
writes its audit entries in the same unit of work as its changes.
"""
