"""Subjects: randomization, corrections, withdrawal, views and the confirmation PDF."""
