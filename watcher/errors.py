"""The project's own exceptions. Only cli.py turns them into messages and exit codes."""


class WatcherError(Exception):
    """Base class for every expected failure."""


class ConfigError(WatcherError):
    """The configuration is invalid; ``problems`` lists every located problem."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class SecretError(WatcherError):
    """A password or URL could not be read from its file, variable or credential."""


class FetchError(WatcherError):
    """The mailbox could not be reached, logged in to or read."""


class AuthenticationFailed(FetchError):
    """The server refused the account's credentials: retrying soon will not help."""


class OAuthError(FetchError):
    """An OAuth2 token could not be obtained or refreshed: the token endpoint failed or refused the request."""


class RulesError(WatcherError):
    """A rules or guidance data file is invalid; the message names the file and key."""


class StoreError(WatcherError):
    """The event database cannot be opened or is newer than this program."""


class NotFound(WatcherError):
    """A requested event or channel does not exist."""
