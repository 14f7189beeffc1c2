"""top-import: spreadsheet rows -> signed Taobao Open Platform API calls, one call a row."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("top-import")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
