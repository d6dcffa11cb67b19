"""Watch mode: fanotify events applied to the served numbers."""
