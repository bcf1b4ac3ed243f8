"""ctypes views of the DLPack structs and capsule calls, for tests that
play foreign producers and consumers (written independently of dlpx)."""

import ctypes

api = ctypes.pythonapi


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    pass


LEGACY_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                            ("deleter", LEGACY_DELETER)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


VERSIONED_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))
DLManagedTensorVersioned._fields_ = [
    ("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
    ("deleter", VERSIONED_DELETER), ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]

READ_ONLY, IS_COPIED, SUBBYTE_PADDED = 1, 2, 4

capsule_new = api.PyCapsule_New
capsule_new.restype = ctypes.py_object
capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
capsule_get_pointer = api.PyCapsule_GetPointer
capsule_get_pointer.restype = ctypes.c_void_p
capsule_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
capsule_set_name = api.PyCapsule_SetName
capsule_set_name.restype = ctypes.c_int
capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
capsule_is_valid = api.PyCapsule_IsValid
capsule_is_valid.restype = ctypes.c_int
capsule_is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]
capsule_get_name = api.PyCapsule_GetName
capsule_get_name.restype = ctypes.c_char_p
capsule_get_name.argtypes = [ctypes.py_object]

# Capsule names must outlive the capsules: keep them here for the process.
NAMES = {n: ctypes.create_string_buffer(n) for n in (
    b"dltensor", b"dltensor_versioned", b"used_dltensor", b"used_dltensor_versioned")}


def name_of(capsule):
    return capsule_get_name(capsule).decode()


def consume_versioned(capsule):
    """Takes a "dltensor_versioned" capsule as a consumer: renames it and
    returns the DLManagedTensorVersioned (call .deleter when done)."""
    ptr = capsule_get_pointer(capsule, b"dltensor_versioned")
    capsule_set_name(capsule, NAMES[b"used_dltensor_versioned"])
    return ctypes.cast(ptr, ctypes.POINTER(DLManagedTensorVersioned)).contents


def consume_legacy(capsule):
    ptr = capsule_get_pointer(capsule, b"dltensor")
    capsule_set_name(capsule, NAMES[b"used_dltensor"])
    return ctypes.cast(ptr, ctypes.POINTER(DLManagedTensor)).contents


def peek(capsule):
    """The managed tensor of an unconsumed capsule, without taking it."""
    name = name_of(capsule)
    ptr = capsule_get_pointer(capsule, name.encode())
    kind = DLManagedTensorVersioned if name == "dltensor_versioned" else DLManagedTensor
    return ctypes.cast(ptr, ctypes.POINTER(kind)).contents


_PRODUCERS = []


class ForeignProducer:
    """Builds managed tensors from Python-held memory with a counting
    deleter, so tests can hand dlpx arbitrary (also malformed) DLPack data."""

    def __init__(self):
        self.deleted = 0
        self._alive = {}
        self._vdel = VERSIONED_DELETER(self._on_delete)
        self._ldel = LEGACY_DELETER(self._on_delete)
        # A producer's deleter code must outlive every tensor it handed out
        # (a failing test can keep tensors alive in its traceback after the
        # producer fixture is gone): keep the callbacks for the process.
        _PRODUCERS.append(self)

    def _on_delete(self, ptr):
        self.deleted += 1
        self._alive.pop(ctypes.cast(ptr, ctypes.c_void_p).value, None)

    def versioned(self, buffer, shape, strides=None, code=2, bits=32, lanes=1, major=1, minor=3,
                  flags=0, byte_offset=0, device=(1, 0), ndim=None, data=None):
        m = DLManagedTensorVersioned()
        return self._fill(m, buffer, shape, strides, code, bits, lanes, byte_offset, device, ndim,
                          data, versioned=(major, minor, flags))

    def legacy(self, buffer, shape, strides=None, code=2, bits=32, lanes=1, byte_offset=0,
               device=(1, 0), ndim=None, data=None):
        m = DLManagedTensor()
        return self._fill(m, buffer, shape, strides, code, bits, lanes, byte_offset, device, ndim,
                          data, versioned=None)

    def _fill(self, m, buffer, shape, strides, code, bits, lanes, byte_offset, device, ndim, data,
              versioned):
        n = len(shape)
        shape_arr = (ctypes.c_int64 * max(n, 1))(*shape)
        strides_arr = (ctypes.c_int64 * max(n, 1))(*strides) if strides is not None else None
        t = m.dl_tensor
        if data is not None:
            t.data = data
        elif buffer is not None:
            t.data = ctypes.addressof(buffer)
        t.device = DLDevice(*device)
        t.ndim = n if ndim is None else ndim
        t.dtype = DLDataType(code, bits, lanes)
        t.shape = ctypes.cast(shape_arr, ctypes.POINTER(ctypes.c_int64))
        t.strides = (ctypes.cast(strides_arr, ctypes.POINTER(ctypes.c_int64))
                     if strides_arr is not None else None)
        t.byte_offset = byte_offset
        if versioned is not None:
            m.version = DLPackVersion(versioned[0], versioned[1])
            m.flags = versioned[2]
            m.deleter = self._vdel
            name = NAMES[b"dltensor_versioned"]
        else:
            m.deleter = self._ldel
            name = NAMES[b"dltensor"]
        addr = ctypes.addressof(m)
        self._alive[addr] = (m, shape_arr, strides_arr, buffer)
        return capsule_new(addr, name, None)

    @property
    def alive(self):
        return len(self._alive)
