"""The error for problems in a user's data or settings (shown as one message, no traceback)."""


class DataError(Exception):
    """A problem with the user's data; the message names the file or setting and the fix."""


class SettingError(DataError, ValueError):
    """A setting the run cannot honour (a ValueError too, for callers that catch those)."""
