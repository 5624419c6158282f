"""Test-only fault injection, MPIRUNNER_FAULT=KIND[:rank=R][:step=S][:run=N][:stage=NAME][:seconds=X][:code=C]
(docs/failure-behaviour.md); `slow` waits in every forward pass, so it counts as batch latency as a regression would."""
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

from mpirunner.errors import UsageError

FAULT_VARIABLE = "MPIRUNNER_FAULT"
FAULT_KINDS = ("raise", "hang", "exit", "sleep", "slow", "oom")
INJECTED_BYTES = 123 << 30  # what an injected oom says it asked for
# Stages after the timed steps (point.py) where a rank's memory can still run out
FAULT_STAGES = ("gather", "accuracy", "output-check", "rank-values")
OPTION_TYPES = {"rank": int, "step": int, "run": int, "code": int, "seconds": float}  # and stage=NAME


@dataclass(frozen=True)
class Fault:
    """One parsed MPIRUNNER_FAULT (the module docstring); omitted rank/step/run = every one."""

    kind: str
    rank: Optional[int] = None
    step: Optional[int] = None
    run: Optional[int] = None
    seconds: float = 1.0
    code: int = 7
    stage: Optional[str] = None

    def matches(self, rank, run, step):
        return all(want in (None, have) for want, have in ((self.rank, rank), (self.run, run), (self.step, step)))


def parse_fault(text):
    """Parse MPIRUNNER_FAULT (None or '' -> None); a malformed value is a UsageError."""
    if not text:
        return None
    kind, *options = text.strip().split(":")
    if kind not in FAULT_KINDS:
        raise UsageError(f"{FAULT_VARIABLE}={text}: unknown fault '{kind}' (valid: {', '.join(FAULT_KINDS)})")
    values = {}
    for option in options:
        key, _, value = option.partition("=")
        try:
            values[key] = value if key == "stage" and value in FAULT_STAGES else OPTION_TYPES[key](value)
        except (KeyError, ValueError):
            raise UsageError(f"{FAULT_VARIABLE}={text}: bad option '{option}' "
                             f"(valid: rank=R, step=S, run=N, stage={'|'.join(FAULT_STAGES)}, seconds=X, code=C)"
                             ) from None
    if "stage" in values and "step" in values:
        raise UsageError(f"{FAULT_VARIABLE}={text}: stage= and step= exclude each other (a stage is after the steps)")
    return Fault(kind, **values)


def inject(fault, rank, host, run, step):
    where = f"rank {rank} on {host}, run {run}, " + (f"stage {fault.stage}" if fault.stage else f"step {step}")
    if fault.kind == "raise":
        raise RuntimeError(f"{FAULT_VARIABLE}: injected failure on {where}")
    if fault.kind == "oom":  # c10's message, word for word up to the size
        raise RuntimeError(f"[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           f"you tried to allocate {INJECTED_BYTES} bytes. Error code 12 ({FAULT_VARIABLE} on {where})")
    if fault.kind == "exit":
        print(f"[rank {rank} {host}] {FAULT_VARIABLE}: exiting with status {fault.code} on {where}",
              file=sys.stderr, flush=True)
        os._exit(fault.code)
    if fault.kind == "hang":
        while True:  # sleeps in short pieces, like a process stuck waiting
            time.sleep(1.0)
    time.sleep(fault.seconds)


class Faults:
    """This rank's MPIRUNNER_FAULT: wrap_step is called once per run (batch size) and counts its step calls."""

    def __init__(self, fault, rank, host):
        self.fault, self.rank, self.host = fault, rank, host
        self.run_index = 0

    def slow_model(self, module):
        """`slow` (rank=R only): every forward pass of the model waits `seconds` first, inside the batch timing."""
        fault = self.fault
        if fault is not None and fault.kind == "slow" and fault.matches(self.rank, None, None):
            module.register_forward_pre_hook(lambda _module, _inputs: time.sleep(fault.seconds))

    def wrap_step(self, step):
        self.run_index += 1
        if self.fault is None or self.fault.stage is not None or self.fault.kind == "slow":
            return step
        run, calls = self.run_index, [0]

        def faulty_step(step_input):
            calls[0] += 1
            if self.fault.matches(self.rank, run, calls[0]):
                inject(self.fault, self.rank, self.host, run, calls[0])
            return step(step_input)

        return faulty_step

    def at_stage(self, stage):
        """The fault, if it names this stage (FAULT_STAGES) of the current run on this rank."""
        fault = self.fault
        if fault is not None and fault.stage == stage and fault.matches(self.rank, self.run_index, None):
            inject(fault, self.rank, self.host, self.run_index, None)


def faults_from_environment(world):
    """Parse MPIRUNNER_FAULT for this rank (job.py agrees on a bad value across ranks, so none waits)."""
    return Faults(parse_fault(os.environ.get(FAULT_VARIABLE)), world.rank, world.host)
