"""Runs a script as the processes of one JAX multi-process job on 127.0.0.1.

The test side (`run_job`) starts N copies of a script, each told the
coordinator address (127.0.0.1 and a free port), the process count and its
process id through the environment variables Keras reads
(`keras.distribution.initialize`): `KERAS_DISTRIBUTION_JOB_ADDRESSES`,
`KERAS_DISTRIBUTION_NUM_PROCESSES`, `KERAS_DISTRIBUTION_PROCESS_ID`. Each
process runs in its own process group with its output in a log file; the
job is bounded in time, and no process outlives `run_job`: on a timeout, or
(with `fail_fast`) as soon as one process fails, the others are killed,
since they would wait for it in a collective until JAX's heartbeat timeout.

The worker side (`initialize`) joins the job with gloo collectives on the CPU.
Results come back as files the workers write.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

JOB_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
# How long JAX waits for a silent process before ending the job (default 100 s).
HEARTBEAT_TIMEOUT = "KT_TEST_HEARTBEAT_TIMEOUT_S"


def skip_reason() -> str | None:
    """Why this machine cannot run a JAX multi-process CPU job, or None."""
    try:
        import jax
    except ImportError:
        return "JAX is not installed."
    if not hasattr(jax.config, "jax_cpu_collectives_implementation"):
        return (
            f"JAX {jax.__version__} has no CPU collectives "
            "(`jax_cpu_collectives_implementation`, gloo): multi-process jobs on "
            "CPUs need a newer jax and jaxlib."
        )
    return None


def free_ports(count: int = 1) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on now."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclasses.dataclass
class Worker:
    process_id: int
    returncode: int | None
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, characters: int = 3000) -> str:
        return (
            f"--- process {self.process_id} (exit {self.returncode}) ---\n"
            + (self.output[-characters:])
        )


class JobTimeout(AssertionError):
    """The job ran past its time limit; its processes were killed."""


def run_job(
    script,
    args=(),
    log_dir=None,
    num_processes: int = 2,
    timeout: float = 300,
    fail_fast: bool = True,
    heartbeat_timeout_s: int = 100,
    single_process_too: bool = False,
) -> list[Worker]:
    """Runs `script args` as `num_processes` processes of one JAX job; waits for all.

    Returns one `Worker` per process (its exit code and log). With
    `fail_fast`, the first process to fail takes the others down with it.
    Raises `JobTimeout` (after killing every process) past `timeout` seconds.
    `single_process_too` also runs the script as a plain process beside the
    job (the one-process reference), last in the list.
    """
    (port,) = free_ports(1)
    job = {
        "KERAS_BACKEND": "jax",
        JOB_ADDRESSES: f"127.0.0.1:{port}",
        NUM_PROCESSES: str(num_processes),
        HEARTBEAT_TIMEOUT: str(heartbeat_timeout_s),
    }
    envs = [{**job, PROCESS_ID: str(index)} for index in range(num_processes)]
    if single_process_too:
        envs.append({"KERAS_BACKEND": "jax"})
    return run_processes(script, args, envs, log_dir, timeout, fail_fast)


def run_processes(script, args, envs, log_dir=None, timeout=300, fail_fast=True) -> list[Worker]:
    """Runs `script args` once per environment in `envs` (added to this one).

    Each process gets its own process group and log file; see `run_job`.
    """
    log_dir = Path(log_dir or ".")
    base = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    processes, workers = [], []
    try:
        for index, env in enumerate(envs):
            log = log_dir / f"process{index}.log"
            with open(log, "w") as handle:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, str(script), *map(str, args)],
                        env={**base, **env},
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            workers.append(Worker(index, None, log))
        _wait(processes, workers, time.monotonic() + timeout, fail_fast)
    finally:
        for process in processes:
            _kill(process)
    return workers


def _wait(processes, workers, deadline, fail_fast):
    while True:
        codes = [process.poll() for process in processes]
        for worker, code in zip(workers, codes):
            worker.returncode = code
        if all(code is not None for code in codes):
            return
        if fail_fast and any(code not in (None, 0) for code in codes):
            return
        if time.monotonic() > deadline:
            for process in processes:
                _kill(process)
            tails = "\n".join(worker.tail() for worker in workers)
            raise JobTimeout(f"The job ran past its time limit; killed.\n{tails}")
        time.sleep(0.2)


def _kill(process) -> None:
    """Kills `process` and whatever is left of its process group; reaps it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def initialize() -> tuple[int, int]:
    """In a worker: joins the job `run_job` started; returns (process id, count).

    Uses gloo for the CPU collectives, as a multi-host CPU job must.
    """
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process_id = int(os.environ[PROCESS_ID])
    num_processes = int(os.environ[NUM_PROCESSES])
    jax.distributed.initialize(
        coordinator_address=os.environ[JOB_ADDRESSES],
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=int(os.environ.get(HEARTBEAT_TIMEOUT, "100")),
        initialization_timeout=120,
    )
    return process_id, num_processes


def in_job() -> bool:
    """True in a worker that `run_job` started."""
    return NUM_PROCESSES in os.environ
