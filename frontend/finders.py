"""Serves Plotly.js from the plotly Python package, so no CDN and no copy in the repo."""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_STATIC_PATH = "vendor/plotly.min.js"
_PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
PLOTLY_JS = _PLOTLY_DIR / "plotly.min.js"


class PlotlyJsFinder(BaseFinder):
    """Maps ``static/vendor/plotly.min.js`` to the package's bundled file."""

    storage = FileSystemStorage(location=str(_PLOTLY_DIR))
    storage.prefix = "vendor"

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        if path != PLOTLY_STATIC_PATH:
            return [] if find_all else None
        found = str(PLOTLY_JS)
        return [found] if find_all else found

    def list(self, ignore_patterns):
        yield "plotly.min.js", self.storage
