"""Where the browser tests save their screenshots (a CI artifact folder)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SAGELLM_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
