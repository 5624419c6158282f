"""Stand-in for popart's version functions, for tests only."""


def versionString():
    return "3.3.0+fake"


def versionNumber():
    return (3, 3, 0)
