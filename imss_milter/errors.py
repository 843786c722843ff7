"""The one exception hierarchy of imss-milter: every error a user can see derives from ImssError."""


class ImssError(Exception):
    """Base class; str() is a message fit for an administrator."""

    default_message = "imss-milter error"

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)


class ConfigError(ImssError):
    """A config or rule file is wrong: names the file, the line and what was expected."""

    default_message = "invalid configuration"

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        self.detail = message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(where + message)


class StoreError(ImssError):
    """The quarantine/log store could not do what was asked (disk full, database locked...)."""

    default_message = "store failure"


class ParseError(ImssError):
    """Input could not be parsed at all (the MIME layer never raises this for a message)."""

    default_message = "could not parse input"
