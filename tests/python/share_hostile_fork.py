"""Fork scenarios for test_share_hostile.py (run in a subprocess, with only
NumPy and dlpx loaded, so that no framework's threads meet fork)."""

import os
import pickle
import sys

import numpy as np

import dlpx


def main():
    h = dlpx.share({"x": np.arange(10.0)})
    copy = pickle.loads(pickle.dumps(h))
    r1, w1 = os.pipe()  # child -> parent: the child's handle
    r2, w2 = os.pipe()  # parent -> child: done
    pid = os.fork()
    if pid == 0:
        try:
            a = dlpx.attach(copy, "numpy")["x"]  # the parent's, through its socket
            b = dlpx.attach(h, "numpy")["x"]  # the inherited owner handle
            assert a.tolist() == b.tolist() == list(range(10))
            mine = dlpx.share({"y": np.full(5, 7, dtype=np.int32)})  # its own server
            os.write(w1, (str(mine) + "\n").encode())
            os.read(r2, 1)
            os._exit(0)  # without closing anything
        except BaseException as e:  # pragma: no cover
            os.write(w1, f"ERR {e!r}\n".encode())
            os._exit(1)
    line = os.read(r1, 4096).decode().strip()
    assert not line.startswith("ERR"), line
    y = dlpx.attach(line, "numpy")["y"]
    assert y.tolist() == [7] * 5
    assert line.split(":")[6] != str(h).split(":")[6]  # the child runs its own server
    os.write(w2, b"x")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert y.tolist() == [7] * 5  # valid after the child exited
    try:
        dlpx.attach(line)
        raise AssertionError("attached the segment of a child that is gone")
    except FileNotFoundError:
        pass
    assert dlpx.attach(copy, "numpy")["x"].tolist() == list(range(10))  # the parent still serves
    h.close()
    print("ok")


if __name__ == "__main__":
    main()
    sys.exit(0)
