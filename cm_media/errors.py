"""User-facing errors: the CLI prints them as one `error: ...` line and exits with status 2."""


class UserError(Exception):
    """A mistake the user can fix (bad file, option, preset or config key); never shown as a traceback."""
