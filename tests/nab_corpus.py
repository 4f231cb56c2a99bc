"""Where the tests find nab-dev: ``$AIOPS_NAB_DATA``, else ``../shared/data/nab-dev`` beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NAB_DATA = Path(
    os.environ.get("AIOPS_NAB_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "nab-dev"
)


def requires_nab(part: str) -> pytest.MarkDecorator:
    """Skip unless ``NAB_DATA / part`` (``data``, ``reference-results``) is a directory."""
    return pytest.mark.skipif(
        not (NAB_DATA / part).is_dir(),
        reason=f"nab-dev {part}/ not found at {NAB_DATA} (set AIOPS_NAB_DATA to the nab-dev directory)",
    )
