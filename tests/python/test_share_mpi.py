"""dlpx.mpi under a real ``mpirun -np 4`` (Open MPI or any mpirun on PATH):
the rank side is mpi_worker.py; each test runs one job and checks that
rank 0 reported every rank passed.

On one machine MPI puts all four ranks on one node, so the cross-node path
(the leader of each other node receives the image) is run with
DLPX_MPI_RANKS_PER_NODE=2: two pretend nodes of two ranks."""

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mpi4py")
pytest.importorskip("numpy")

import dlpx

MPIRUN = shutil.which("mpirun")
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_worker.py")

pytestmark = pytest.mark.skipif(MPIRUN is None, reason="no mpirun on PATH")


def _is_open_mpi():
    try:
        out = subprocess.run([MPIRUN, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Open MPI" in out.stdout + out.stderr or "OpenRTE" in out.stdout + out.stderr


def mpirun(*cases, ranks_per_node=None, np=4, timeout=180):
    env = dict(os.environ)
    env.pop("DLPX_MPI_RANKS_PER_NODE", None)
    if ranks_per_node is not None:
        env["DLPX_MPI_RANKS_PER_NODE"] = str(ranks_per_node)
    env["DLPX_TEST_TAG"] = str(os.getpid())
    # The ranks import the same dlpx as this process (a checkout or installed).
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(dlpx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg] + [p for p in
                                                 env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("DLPX_LIBRARY", str(dlpx.library_path))
    cmd = [MPIRUN, "-np", str(np)]
    if _is_open_mpi():
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1")
        cmd += ["--oversubscribe"]
        for var in ("PYTHONPATH", "DLPX_LIBRARY", "DLPX_MPI_RANKS_PER_NODE", "DLPX_TEST_TAG"):
            if var in env:
                cmd += ["-x", var]
    cmd += [sys.executable, WORKER, *cases]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mpirun {' '.join(cases)} did not finish in {timeout} s:\n"
                    f"{e.stdout}\n{e.stderr}")
    out = p.stdout + p.stderr
    assert p.returncode == 0 and f"OK {' '.join(cases)}" in p.stdout, out[-6000:]


@pytest.fixture
def no_shm_left():
    """Nothing of these jobs stays in /dev/shm.  Only their own names are
    looked at (mpitest-<this pid>): other processes of the machine may make
    and remove named segments meanwhile; anonymous ones never appear."""
    yield
    mine = f"dlpx.mpitest-{os.getpid()}"
    assert [f for f in os.listdir("/dev/shm") if f.startswith(mine)] == []


def test_one_node_all_ranks_attach_the_roots_segment(no_shm_left):
    mpirun("node")


def test_pretend_nodes_get_the_image_once_per_node(no_shm_left):
    mpirun("pretend", ranks_per_node=2)


def test_named_segments_per_pretend_node(no_shm_left):
    mpirun("named", ranks_per_node=2)


def test_errors_raise_on_every_rank(no_shm_left):
    mpirun("errors", ranks_per_node=2)


def test_dlpx_tensors_through_mpi4py_buffers(no_shm_left):
    mpirun("buffers")
