"""``python -m benchmarks``: the bridge against a minimal relay, end to end (see README.md)."""

from benchmarks.cli import main

raise SystemExit(main())
