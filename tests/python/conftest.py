"""Shared fixtures for the Python tests.

The tests use whichever dlpx is importable: the installed package (what
the README's test command does), or a checkout (PYTHONPATH=py with
DLPX_LIBRARY pointing at a built libdlpx.so)."""

import gc
import os
import sys
import time

import pytest

try:
    import numpy  # noqa: F401  (loaded first: dlpx's NumPy checks look at it)
except ImportError:  # pragma: no cover
    numpy = None

# CUDA: the driver's test double unless DLPX_TEST_CUDA=real (the GPU
# machine's run); set before libdlpx first opens a driver.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakecuda  # noqa: E402

REAL_CUDA = os.environ.get("DLPX_TEST_CUDA") == "real"
FAKE_CUDA = None if REAL_CUDA else fakecuda.build()
if FAKE_CUDA:
    os.environ["DLPX_LIBCUDA"] = FAKE_CUDA
    os.environ.setdefault("FAKECUDA_DEVICES", "2")
    os.environ.setdefault("FAKECUDA_MEMORY", str(1 << 30))

import dlpx  # noqa: E402
from dlpx import _quirks  # noqa: E402

# What the installed NumPy does with DLPack (the suite runs on NumPy 2.0 on
# Python 3.9 as well as on the newest).
#   NUMPY_VERSIONED: exports and imports versioned capsules (NumPy >= 2.1);
#     older ones speak legacy DLPack only and refuse read-only arrays.
#   NUMPY_IMPORT_WRITABLE: np.from_dlpack of writable data is writable
#     (NumPy >= 2.2.5; older ones mark every DLPack import read-only).
NUMPY_VERSIONED = numpy is None or _quirks.numpy_speaks_versioned()
NUMPY_IMPORT_WRITABLE = numpy is None or _quirks.numpy_imports_writable()
needs_versioned_numpy = pytest.mark.skipif(
    not NUMPY_VERSIONED, reason="this NumPy speaks only legacy DLPack (NumPy < 2.1)")


def live():
    s = dlpx.stats()
    return s["storages_live"], s["tensors_live"], s["exports_live"]


@pytest.fixture
def no_leaks():
    """Asserts that the test leaves no libdlpx storage, tensor or export
    alive (every deleter ran, nothing was freed twice)."""
    gc.collect()
    before = live()
    yield
    gc.collect()
    # JAX releases imported buffers from a thread of its own: give it a moment
    deadline = time.monotonic() + (3 if "jax" in sys.modules else 0)
    while live() != before and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
    assert live() == before, f"live (storages, tensors, exports) before {before}, after {live()}"


@pytest.fixture(scope="module")
def _frozen_heap():
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def gc_baseline(_frozen_heap):
    """Use before no_leaks in suites that load PyTorch or JAX.  no_leaks
    calls gc.collect() around every test, and with those libraries loaded a
    full collection walks hundreds of thousands of objects; so what exists
    now (collected by the previous test's no_leaks) is frozen and each
    collection sees only what this test makes.  A previous failure's
    traceback (sys.last_*) is dropped first, so objects it held are not
    freed in the middle of this test."""
    if getattr(sys, "last_traceback", None) is not None:
        sys.last_type = sys.last_value = sys.last_traceback = None
        gc.collect()
    gc.freeze()


# ---- layouts shared by the interop suites -------------------------------------------


def _broadcast(x, row, shape):
    if isinstance(x, dlpx.Tensor):
        return x[row].broadcast_to(shape)
    return numpy.broadcast_to(x[row], shape)


def _permute(x, axes):
    return x.permute(*axes) if isinstance(x, dlpx.Tensor) else x.transpose(axes)


def layouts(cols=6, negative_step=-2, offset=2):
    """Views of a (4, cols) base that a NumPy array and a dlpx.Tensor both
    make (both speak NumPy basic indexing), by name."""
    return {
        "contiguous": lambda x: x,
        "transposed": lambda x: x.T,
        "negative": lambda x: x[::-1, ::negative_step],
        "step": lambda x: x[::2, 1::3],
        "offset": lambda x: x[1:, offset:],
        "zero_size": lambda x: x[2:2],
        "zero_d": lambda x: x[1, 2, ...],
        "size1": lambda x: x[1:2, None, :],
        "broadcast": lambda x: _broadcast(x, 1, (3, cols)),
        "3d_permuted": lambda x: _permute(x.reshape(2, 2, cols)[:, ::-1], (2, 0, 1)),
    }


# ---- shared memory: the suite leaves nothing in /dev/shm -------------------------------


def _dlpx_shm_entries():
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("dlpx.")}
    except OSError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def no_dev_shm_leftovers():
    """After the whole suite, /dev/shm holds no dlpx entry that was not
    there before it (anonymous segments never appear there; named ones the
    tests make are unlinked, also when a test fails)."""
    before = _dlpx_shm_entries()
    yield
    left = _dlpx_shm_entries() - before
    for n in left:  # clean up, then fail
        try:
            os.unlink(os.path.join("/dev/shm", n))
        except OSError:
            pass
    assert not left, f"the suite left these in /dev/shm: {sorted(left)}"


# ---- real servers for the remote tests (servers.py) ------------------------------------


def _remote_env_cleared(monkeypatch, tmp_path):
    """No AWS configuration of the machine reaches a test: no endpoint,
    credentials, profile or shared files but what the test sets."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def nginx_server():
    """nginx on 127.0.0.1 over HTTP and HTTPS (servers.NginxServer): .http,
    .https, .docroot, .cert (pass it as ca_file), .put(), .url(),
    .requests() from its access log."""
    import servers
    if servers.NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    if servers.OPENSSL is None:
        pytest.skip("openssl is not installed")
    s = servers.NginxServer()
    yield s
    s.stop()


@pytest.fixture
def nginx(nginx_server):
    """The session's nginx with an empty docroot for this test."""
    import shutil
    for n in os.listdir(nginx_server.docroot):
        p = os.path.join(nginx_server.docroot, n)
        if os.path.isdir(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    os.mkdir(os.path.join(nginx_server.docroot, "dav"))
    return nginx_server


def _moto_or_skip():
    import servers
    if not servers.moto_available():
        pytest.skip("moto[server] and boto3 are not installed")
    return servers


@pytest.fixture(scope="session")
def moto_server():
    """moto's standalone S3 server, authentication off (servers.MotoServer)."""
    servers = _moto_or_skip()
    s = servers.MotoServer()
    yield s
    s.stop()


class S3Env:
    """One test's view of an S3 server: a fresh bucket, a boto3 client, the
    AWS_* environment pointing dlpx at the server."""

    _n = 0

    def __init__(self, server, bucket=None):
        S3Env._n += 1
        self.server = server
        self.endpoint = server.endpoint
        self.client = server.client()
        self.bucket = bucket or f"dlpx-test-{os.getpid()}-{S3Env._n}"
        if bucket is None:
            self.client.create_bucket(Bucket=self.bucket)

    def url(self, key, bucket=None):
        return f"s3://{bucket or self.bucket}/{key}"

    def put(self, key, data):
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return self.url(key)

    def get(self, key):
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def exists(self, key):
        import botocore.exceptions
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except botocore.exceptions.ClientError as e:
            if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise

    def uploads(self):
        """The multipart uploads in progress in the bucket."""
        return self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])


@pytest.fixture
def s3(moto_server, monkeypatch, tmp_path):
    """A fresh bucket on the session's moto server, with AWS_ENDPOINT_URL,
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION set for dlpx."""
    _remote_env_cleared(monkeypatch, tmp_path)
    for k, v in moto_server.env.items():
        monkeypatch.setenv(k, v)
    return S3Env(moto_server)


@pytest.fixture(scope="session")
def moto_auth_server():
    """A second moto server that checks signatures and IAM policies;
    .key is an IAM user's (access key id, secret) allowed every s3 action,
    .bucket a bucket made before authentication was turned on."""
    servers = _moto_or_skip()
    s = servers.MotoServer()
    try:
        s.bucket = "dlpx-auth"
        s.client().create_bucket(Bucket=s.bucket)
        s.key = s.enable_auth()
    except BaseException:
        s.stop()
        raise
    yield s
    s.stop()


@pytest.fixture
def s3_auth(moto_auth_server, monkeypatch, tmp_path):
    """moto_auth_server with the environment pointing dlpx at it and no
    credentials in the environment (the test gives them); .client is a
    boto3 client with the IAM user's key."""
    _remote_env_cleared(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_auth_server.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    env = S3Env.__new__(S3Env)
    env.server = moto_auth_server
    env.endpoint = moto_auth_server.endpoint
    env.bucket = moto_auth_server.bucket
    ak, sk = moto_auth_server.key
    env.key = (ak, sk)
    env.client = moto_auth_server.client(aws_access_key_id=ak, aws_secret_access_key=sk)
    return env


@pytest.fixture
def fault_proxy():
    """make(upstream_url) -> a started servers.FaultProxy; every one is
    stopped after the test."""
    import servers
    made = []

    def make(upstream):
        p = servers.FaultProxy(upstream)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


def fd_count():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leaks():
    """The test leaves as many descriptors open as it found (waiting a
    moment for the fault proxy's threads to close their sockets)."""
    before = fd_count()
    yield
    deadline = time.monotonic() + 3
    while fd_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count() <= before, f"descriptors before {before}, after {fd_count()}: " + ", ".join(
        sorted(os.readlink(f"/proc/self/fd/{n}") for n in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{n}")))
