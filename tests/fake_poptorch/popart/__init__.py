"""Stand-in for popart's version functions, for tests only (the SDK generation follows FAKE_POPTORCH_SDK)."""
import os

_VERSION = (2, 4, 0) if os.environ.get("FAKE_POPTORCH_SDK", "3") == "2" else (3, 3, 0)


def versionString():
    return ".".join(map(str, _VERSION)) + "+fake"


def versionNumber():
    return _VERSION
