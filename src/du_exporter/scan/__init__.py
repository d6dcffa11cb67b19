"""Scanning: the walk, its engines, the worker pool and the scan runner."""
