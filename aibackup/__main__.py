"""`python -m aibackup` runs the CLI."""

from __future__ import annotations

from aibackup.cli import main

main()
