"""`python -m joblib_conformance`: the `joblib-conformance` command."""

import sys

from joblib_conformance.cli import main

sys.exit(main())
