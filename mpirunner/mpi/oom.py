"""Out of memory is a result, not a crash (mpi/agreement.py): recognise it in an error of any allocator (CPU, CUDA,
IPU at compile time, numpy, MemoryError) and say in one line where it happened and how much was asked for."""
import re

_OOM_TEXT = re.compile(r"can't allocate memory|out of memory|OutOfMemory|Unable to allocate|"
                       r"not enough memory|failed to allocate", re.IGNORECASE)
_OOM_TYPES = ("MemoryError", "OutOfMemoryError", "_ArrayMemoryError")
_ASKED = (  # the amount asked for, and its unit where it is not bytes
    re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE),               # CPU
    re.compile(r"Tried to allocate ([\d.]+) ([KMGT]i?B)", re.IGNORECASE),      # CUDA
    re.compile(r"Unable to allocate ([\d.]+) ([KMGT]i?B)", re.IGNORECASE),     # numpy
    re.compile(r"(\d+) bytes (?:used|required)", re.IGNORECASE),               # IPU tile memory
)
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def is_out_of_memory(error):
    """Whether `error` says memory ran out (by type, or by the allocator's message)."""
    names = {kind.__name__ for kind in type(error).__mro__}
    return bool(names & set(_OOM_TYPES)) or bool(_OOM_TEXT.search(str(error)))


def bytes_asked(text):
    """The allocation that failed, in bytes, when the message says (None when it does not)."""
    found = next(filter(None, (pattern.search(text) for pattern in _ASKED)), None)
    if found is None:
        return None
    if found.lastindex == 1:  # no unit: bytes
        return int(found.group(1))
    return int(float(found.group(1)) * _UNITS[found.group(2)[0].upper()])


def describe(nbytes):
    if nbytes is None:
        return "the amount asked for was not reported"
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if nbytes >= scale:
            return f"asked for {nbytes / scale:.1f} {unit}"
    return f"asked for {nbytes} bytes"


def out_of_memory_reason(error, rank, host, stage=None):
    """One line for the run's failure_reason: where (and in which stage after the steps), how much was asked for."""
    where = f" in {stage}" if stage else ""
    return f"out of memory on rank {rank} ({host}){where}: {describe(bytes_asked(str(error)))}"
