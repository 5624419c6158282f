"""Whether a stored value is a number to show or draw: the report's one test, shared by its tables and figures.

Older files lack newer fields and runs that measured nothing store NaN, so every cell and mark asks this first.
"""
import math


def finite_number(value):
    """True for an int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
