"""``python -m float_core.train``: see :mod:`float_core.train.cli`."""

from .cli import main

raise SystemExit(main())
