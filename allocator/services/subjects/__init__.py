"""Subjects: randomization (randomize.py, the hot path alone), corrections without deletion,
withdrawal, the blinded views and the randomization confirmation PDF.

Refusals that must leave a trace (an ineligible patient in the screening log) are committed before
the error is raised; every other refusal changes nothing.
"""
