"""``python -m du_exporter``."""

from __future__ import annotations

from du_exporter.cli import main


if __name__ == "__main__":
    main()
