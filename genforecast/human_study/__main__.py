"""``python -m genforecast.human_study``: the same as ``genforecast human-study``, without loading the training CLI."""

from __future__ import annotations

import sys

from genforecast.human_study.cli import main

sys.exit(main())
