"""The seed's entry point: ``python main.py`` is ``perpbot run`` (same options, same refusals)."""

from __future__ import annotations

import sys

from perpbot.cli.main import app

if __name__ == "__main__":
    sys.exit(app(["run", *sys.argv[1:]], prog_name="perpbot run"))
