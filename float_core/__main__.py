"""`python -m float_core ...`: see :mod:`float_core.cli`."""

from .cli import main

raise SystemExit(main())
