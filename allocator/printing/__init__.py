"""Printed documents of the service that are not kit documents: the monitoring report PDFs and
charts, the randomization design quality report. Pure renderers (plain data in, bytes or text
out): no web framework, no database, no keys."""
