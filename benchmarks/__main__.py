"""`python -m benchmarks` (or `make bench`): run every benchmark and print/write the results."""

from __future__ import annotations

import sys

from benchmarks.backup_chroma import main

sys.exit(main(sys.argv[1:]))
