"""``python -m loki_pipeline.cli``: the ``loki`` command."""

import sys

from loki_pipeline.cli import main

sys.exit(main())
