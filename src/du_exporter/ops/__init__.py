"""Operator tools over the stored scans: top, diff, export, db admin."""
