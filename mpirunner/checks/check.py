"""One check of a run: what it looked at (name), whether it passed, the reason a user can act on when it did
not, and the run attributes it measured; decide_validity turns the checks into the verdict."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    reason: str = ""
    attrs: dict = field(default_factory=dict)


def passed(name, attrs=None):
    return Check(name, True, "", dict(attrs or {}))


def failed(name, reason, attrs=None):
    return Check(name, False, reason, dict(attrs or {}))
