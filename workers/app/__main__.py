"""`python -m workers.app ...` is the `merclip` command."""

import sys

from workers.app.cli import main

sys.exit(main())
