"""The project's error types: each message says what is wrong and where, so a CLI can print
it as one line."""


class ChurnError(Exception):
    """Base class for errors a user can act on (bad input, bad settings, failed checks)."""


class SettingsError(ChurnError):
    """A setting has an invalid value."""


class SourceError(ChurnError):
    """A data source or output URI cannot be read, written or understood."""


class ContractError(ChurnError):
    """The data breaks the data contract (missing columns, wrong types, too many bad rows)."""


class RegistryError(ChurnError):
    """The model registry is missing a version, or a model file fails its hash check."""


def one_line(exc: BaseException) -> str:
    """A library's message as one line (Arrow quotes rows with their line breaks, Google's
    clients add the response on lines of its own)."""
    return " ".join(str(exc).split())


def google_reason(exc: BaseException) -> str:
    """A Google API refusal as `<HTTP code> <the service's own words>`, without the REST
    transport's `POST https://…: ` in front of them."""
    code, message = getattr(exc, "code", None), getattr(exc, "message", None) or str(exc)
    method, _, rest = message.partition(" ")
    if method in ("GET", "POST", "PATCH", "PUT", "DELETE") and ": " in rest:
        message = rest.split(": ", 1)[1]
    return one_line(f"{code} {message}" if code else message)
