"""The runner's header line: which hardware the job runs on, printed once before the first run block."""
from mpirunner.report.rows import text_value


def hardware_line(root_attrs, rank_rows):
    """'device: cpu backend on <CPU model>, 2 thread(s) per rank, 1 rank(s) on vm' (cuda: the GPU and its memory).

    Works on the file's root attributes and /ranks rows as stored, so it reads the same from a file."""
    backend = text_value(root_attrs.get("backend", "?"))
    name = text_value(root_attrs.get("device_name", backend))
    parts = [f"device: {backend} backend on {name}"]
    memory = root_attrs.get("gpu_total_memory_bytes")
    if memory:
        parts[0] += f" ({int(memory) / 2**30:.1f} GiB)"
    threads = sorted({int(row["threads"]) for row in rank_rows if row.get("threads") not in (None, "")})
    if threads:
        parts.append(f"{'-'.join(map(str, (threads[0], threads[-1]) if len(threads) > 1 else threads))} "
                     f"thread(s) per rank")
    hosts = sorted({text_value(row.get("host", "")) for row in rank_rows} - {""})
    parts.append(f"{len(rank_rows)} rank(s) on {', '.join(hosts) or '?'}")
    return ", ".join(parts)
