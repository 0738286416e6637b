"""`python -m toast.search.cli ...`: the `toast-search` command."""

import sys

from . import main

sys.exit(main())
