"""Exposition: metric families and the bytes /metrics and the textfile send."""
