"""Data files shipped with the package (the common-password list)."""
