"""The day a run works for: one definition scoring and monitoring both read (monitoring sits
below scoring in the layers, so the function lives beneath both)."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

from components.errors import SettingsError


def resolve_as_of(text: str, *, today: date | None = None, time_zone: str = "UTC") -> date:
    """The as-of date a run scores (or monitors) for: `text` as YYYY-MM-DD, or, when empty,
    today's date in `time_zone` at the moment this runs (so a compiled or scheduled pipeline
    never freezes one, and a schedule at 00:30 in Tokyo works on Tokyo's today, not UTC's)."""
    if not text.strip():
        return today or datetime.now(ZoneInfo(time_zone)).date()
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise SettingsError(f"as-of date must be YYYY-MM-DD, got {text!r}") from None
