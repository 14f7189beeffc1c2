"""top-import: spreadsheet rows -> signed Taobao Open Platform API calls, one call a row."""

# The one place the version is written: pyproject.toml reads it from here (a constant costs
# nothing at start-up, where importlib.metadata costs ~40 ms of every command).
__version__ = "0.1.0"
