"""Monitoring and publication reports for monitors, auditors and trial managers (REP-01..09,
BLD-07, BLD-09, BLD-13, AUD-05, AUD-09, DIB-04), one module per report.

One function per report returns typed rows; `catalogue.build` turns a report into a `ReportView`
(metadata, facts, tables of text cells, an optional chart) that the web page, the CSV and the PDF all
show, so the three never disagree; `export.export` renders it and writes a `report.exported` audit
entry.

Blinding (BLD-07, UNB-08): the blinded reports hold no arm and nothing computed from one. Their
inputs are blinded already — subject views, kit statuses, unblinding *events*, the clear values of
audit entries (never a sealed value) — and pharmacovigilance unblindings are left out of them. The
restricted versions (REPORT_VIEW_UNBLINDED) add what only unblinded roles may see: PV unblindings,
block sizes and list lengths, and the participant flow per arm, which exists only once the trial is
UNBLINDED (409 before) and reads each subject's arm through `arm_access` (one audited read each).

Scope: every report is limited to the sites where the reader holds the permission (a monitor of
one site sees that site only), narrowed further by the `site` filter. Periods are UTC dates,
inclusive.
"""
