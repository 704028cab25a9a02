// _aetherless_cring: the reading and writing half of aetherless/ring.py in C.
//
// ring.py is the reference: this module does exactly what its Ring.try_read / read / try_write /
// write do, record for record and error for error (docs/shm-layout.md, the same checks in the
// same order), and sdk/python/tests/test_ring.py runs against both. What C saves per message is
// the interpreter: in Python one write + read of a 64-byte record costs ~7 us (ctypes word
// access, struct packing, a ctypes call per fence); here it is a few hundred ns. Waiting is
// cheaper too: a spin step is sched_yield + two loads, not a whole try_read.
//
// A ring given a bell (an eventfd, Core's last argument) wakes its sleeping consumer by writing
// it instead of through data_seq, as ring.py's Ring does: the orchestrator reads responses on its
// event loop, which watches the bell in epoll. ABI (the module's constant) says which Core this
// is: ring.py uses the module only when it is the one it expects.
//
// The CRC and futex calls are the ones the Swift side links (Sources/CAetherIPC), compiled in
// by scripts/build-python-ext.sh, so both sides checksum with one implementation. The module
// lives beside the package (sdk/python/), not in it: the pure-Python wheel of the package
// (pyproject.toml) must not carry a binary built for one interpreter.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aether_ipc.h"

// 1: Core(mmap, ring_offset, capacity, max_payload, index, spin); 2: and bell.
#define CRING_ABI 2

#define RING_HEADER_SIZE 256
#define OFF_HEAD 0
#define OFF_TAIL 64
#define OFF_POISONED 72
#define OFF_DATA_SEQ 128
#define OFF_CONSUMER_SLEEPING 132
#define OFF_SPACE_SEQ 192
#define OFF_PRODUCER_SLEEPING 196
#define WRAP_MARKER 0xFFFFFFFFu

// ring.py's exception classes, handed over once by ring.py (bind_errors).
static PyObject *CorruptedData, *RingPoisoned, *RingTimeout, *MessageTooLarge;

typedef uint32_t (*copy_crc_fn)(uint32_t, void *, const void *, size_t);
static copy_crc_fn copy_crc;  // the fastest kernel this CPU runs, chosen at import

typedef struct {
    PyObject_HEAD
    Py_buffer view;  // an export of the region's mmap, held while open (as ctypes from_buffer does)
    int open;
    // Calls in progress that may release the GIL (read, write): close() refuses while any runs,
    // or another thread could unmap the ring under a futex wait.
    int busy;
    unsigned char *header;
    unsigned char *data;
    uint64_t cap, max_payload, max_record, max_head;
    int index, spin;
    int bell;  // the consumer's eventfd, -1 for none (not ours: never closed)
    // Set once this side poisoned the ring over impossible positions: raised again by every
    // later call, whatever the peer writes into the words afterwards.
    int sticky;
    uint64_t sticky_offset;
    PyObject *sticky_reason;
} Core;

static inline uint64_t *word64(Core *c, int off) { return (uint64_t *)(c->header + off); }
static inline uint32_t *word32(Core *c, int off) { return (uint32_t *)(c->header + off); }
static inline uint64_t load64(Core *c, int off) { return __atomic_load_n(word64(c, off), __ATOMIC_ACQUIRE); }
static inline uint32_t load32(Core *c, int off) { return __atomic_load_n(word32(c, off), __ATOMIC_ACQUIRE); }
static inline void store64(Core *c, int off, uint64_t v) { __atomic_store_n(word64(c, off), v, __ATOMIC_RELEASE); }
static inline void store32(Core *c, int off, uint32_t v) { __atomic_store_n(word32(c, off), v, __ATOMIC_RELEASE); }
static inline void fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
// A sleeping flag the waker takes down itself (docs/shm-layout.md, "Waiting"): true for the one
// caller that should wake the sleeper; the records published before it runs again need no
// wake-up of their own. A plain load first: no exclusive cache line while nobody sleeps.
static inline int claim_sleeper(Core *c, int off) {
    return load32(c, off) && __atomic_exchange_n(word32(c, off), 0, __ATOMIC_ACQ_REL);
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int positions_hold(Core *c, uint64_t head, uint64_t tail) {
    return !(tail > head || head - tail > c->cap || ((head | tail) & 7) || head > c->max_head);
}

// Bumps a sequence word and wakes its sleeper (only this side bumps it; an atomic add all the same,
// it costs nothing beside the futex call).
static int bump_and_wake(Core *c, int seq_offset) {
    uint32_t *seq = word32(c, seq_offset);
    __atomic_fetch_add(seq, 1, __ATOMIC_SEQ_CST);
    int r = aether_futex_wake(seq, 1);
    if (r < 0) {
        errno = -r;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

// ring.py's _wake_consumer: the bell if the ring has one (data_seq left alone: the consumer waits
// on the bell, in epoll), else data_seq and its futex.
static int wake_consumer(Core *c) {
    if (c->bell < 0) return bump_and_wake(c, OFF_DATA_SEQ);
    const uint64_t one = 1;  // an eventfd adds the native-endian u64 written to its counter
    for (;;) {
        if (write(c->bell, &one, sizeof one) >= 0) return 0;
        if (errno == EINTR) continue;
        // A saturated counter (the descriptor may be non-blocking: the orchestrator's NIO sets
        // O_NONBLOCK on the file description it shares with us): a wake-up is pending already.
        if (errno == EAGAIN) return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
}

static PyObject *raise_poisoned_with(uint64_t offset, uint64_t length, PyObject *reason) {
    PyObject *exc = reason ? PyObject_CallFunction(RingPoisoned, "KKO", (unsigned long long)offset,
                                                   (unsigned long long)length, reason)
                           : PyObject_CallFunction(RingPoisoned, "KK", (unsigned long long)offset,
                                                   (unsigned long long)length);
    if (exc) {
        PyErr_SetObject(RingPoisoned, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

// The poisoned word is set (by either side): report where the consumer stands.
static PyObject *raise_poisoned(Core *c) {
    if (c->sticky) return raise_poisoned_with(c->sticky_offset, 0, c->sticky_reason);
    uint64_t off = load64(c, OFF_TAIL) % c->cap;
    uint32_t length = 0;
    if (off <= c->cap - 4) memcpy(&length, c->data + off, 4);
    return raise_poisoned_with(off, length, NULL);
}

// A record that cannot be delimited: poison the ring.
static PyObject *poison(Core *c, uint64_t off, uint32_t length) {
    store32(c, OFF_POISONED, 1);
    return raise_poisoned_with(off, length, NULL);
}

// Head and tail that cannot both hold (ring.py's _poison_positions).
static PyObject *poison_positions(Core *c, uint64_t off, uint64_t head, uint64_t tail) {
    PyObject *reason = PyUnicode_FromFormat(
        "head %llu and tail %llu cannot both hold (tail ahead of head, more than the capacity "
        "apart, not 8-byte aligned, or near overflow)",
        (unsigned long long)head, (unsigned long long)tail);
    if (!reason) return NULL;
    c->sticky = 1;
    c->sticky_offset = off;
    Py_XSETREF(c->sticky_reason, reason);
    store32(c, OFF_POISONED, 1);
    fence();
    // Whichever side sleeps on this ring must look again and learn.
    if (claim_sleeper(c, OFF_CONSUMER_SLEEPING) && wake_consumer(c) < 0) return NULL;
    if (claim_sleeper(c, OFF_PRODUCER_SLEEPING) && bump_and_wake(c, OFF_SPACE_SEQ) < 0) return NULL;
    return raise_poisoned_with(off, 0, reason);
}

static int check_open(Core *c) {
    if (c->open) return 0;
    PyErr_SetString(PyExc_ValueError, "ring is closed");
    return -1;
}

// ---------------------------------------------------------------------------------- consumer

// New reference to the next payload, Py_None when empty, NULL with an exception set.
static PyObject *core_try_read_impl(Core *c) {
    if (check_open(c) < 0) return NULL;
    if (load32(c, OFF_POISONED)) return raise_poisoned(c);
    const uint64_t cap = c->cap;
    uint64_t tail = load64(c, OFF_TAIL);
    const uint64_t start_tail = tail;
    for (;;) {
        uint64_t head = load64(c, OFF_HEAD);
        if (tail == head) {
            if (tail != start_tail) {  // consumed only wrap markers: still freed space
                fence();
                if (claim_sleeper(c, OFF_PRODUCER_SLEEPING) && bump_and_wake(c, OFF_SPACE_SEQ) < 0) return NULL;
            }
            Py_RETURN_NONE;
        }
        uint64_t off = tail % cap;
        if (!positions_hold(c, head, tail)) return poison_positions(c, off, head, tail);
        unsigned char *p = c->data + off;
        uint32_t length, stored;
        memcpy(&length, p, 4);
        memcpy(&stored, p + 4, 4);
        uint64_t contig = cap - off;
        if (length == WRAP_MARKER) {
            if (contig >= c->max_record || tail + contig > head) return poison(c, off, length);
            tail += contig;
            store64(c, OFF_TAIL, tail);
            continue;
        }
        uint64_t record = 8 + (((uint64_t)length + 7) & ~(uint64_t)7);
        if (length > c->max_payload || record > contig || tail + record > head) return poison(c, off, length);
        PyObject *bytes = PyBytes_FromStringAndSize(NULL, length);  // copied out before the space is freed
        if (!bytes) return NULL;
        uint32_t computed = copy_crc(0, PyBytes_AS_STRING(bytes), p + 8, length);
        store64(c, OFF_TAIL, tail + record);
        fence();
        if (claim_sleeper(c, OFF_PRODUCER_SLEEPING) && bump_and_wake(c, OFF_SPACE_SEQ) < 0) {
            Py_DECREF(bytes);
            return NULL;
        }
        if (computed != stored) {
            Py_DECREF(bytes);
            PyObject *exc = PyObject_CallFunction(CorruptedData, "KkK", (unsigned long long)off, (unsigned long)stored,
                                                  (unsigned long long)computed);
            if (exc) {
                PyErr_SetObject(CorruptedData, exc);
                Py_DECREF(exc);
            }
            return NULL;
        }
        return bytes;
    }
}

static PyObject *core_try_read(Core *c, PyObject *Py_UNUSED(ignored)) { return core_try_read_impl(c); }

// Parses a timeout (None or seconds) into a deadline; 0 on success.
static int parse_deadline(PyObject *timeout, int *has_deadline, double *deadline) {
    *has_deadline = 0;
    if (timeout == NULL || timeout == Py_None) return 0;
    double seconds = PyFloat_AsDouble(timeout);
    if (seconds == -1.0 && PyErr_Occurred()) return -1;
    *has_deadline = 1;
    *deadline = monotonic() + seconds;
    return 0;
}

static PyObject *raise_timeout(PyObject *message) {
    if (message) {
        PyErr_SetObject(RingTimeout, message);
        Py_DECREF(message);
    }
    return NULL;
}

static PyObject *read_timeout(Core *c, PyObject *timeout) {
    return raise_timeout(PyUnicode_FromFormat("ring %d: no message within %Ss", c->index, timeout));
}

// futex wait with the GIL released; runs signal handlers after an interruption.
static int sleep_on(Core *c, int seq_offset, uint32_t seq, int has_deadline, double remaining) {
    int64_t ns = has_deadline ? (int64_t)(remaining * 1e9) : -1;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = aether_futex_wait(word32(c, seq_offset), seq, ns);
    Py_END_ALLOW_THREADS
    if (r < 0 && r != -EINTR && r != -ETIMEDOUT) {
        errno = -r;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return PyErr_CheckSignals();
}

// One spin step: yield the CPU with the GIL released; signal handlers run after it.
static int yield_once(void) {
    Py_BEGIN_ALLOW_THREADS
    sched_yield();
    Py_END_ALLOW_THREADS
    return PyErr_CheckSignals();
}

// The optional `timeout` of read() and write(), positional (after `positional` others) or by name.
static int timeout_argument(const char *method, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                            Py_ssize_t positional, PyObject **timeout) {
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    *timeout = Py_None;
    if (nargs > positional + 1 || nargs + nkw > positional + 1 || nargs < positional) goto usage;
    if (nargs == positional + 1) *timeout = args[positional];
    if (nkw == 1) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) ||
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "timeout") != 0)
            goto usage;
        *timeout = args[nargs];
    }
    return 0;
usage:
    PyErr_Format(PyExc_TypeError, "%s() takes %s an optional timeout", method,
                 positional ? "a payload and" : "only");
    return -1;
}

static PyObject *core_read_impl(Core *c, PyObject *timeout);

static PyObject *core_read(Core *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *timeout;
    if (timeout_argument("read", args, nargs, kwnames, 0, &timeout) < 0) return NULL;
    c->busy++;
    PyObject *result = core_read_impl(c, timeout);
    c->busy--;
    return result;
}

static PyObject *core_read_impl(Core *c, PyObject *timeout) {
    PyObject *data = core_try_read_impl(c);
    if (data != Py_None) return data;
    Py_DECREF(data);
    int has_deadline;
    double deadline = 0;
    if (parse_deadline(timeout, &has_deadline, &deadline) < 0) return NULL;
    for (int i = 0; i < c->spin; i++) {
        if (yield_once() < 0) return NULL;
        // Only what try_read would act on is worth a call: a new head, or poison.
        if (load64(c, OFF_HEAD) != load64(c, OFF_TAIL) || load32(c, OFF_POISONED)) {
            data = core_try_read_impl(c);
            if (data != Py_None) return data;
            Py_DECREF(data);
        }
        if (has_deadline && monotonic() >= deadline) return read_timeout(c, timeout);
    }
    for (;;) {
        uint32_t seq = load32(c, OFF_DATA_SEQ);
        store32(c, OFF_CONSUMER_SLEEPING, 1);
        fence();
        data = core_try_read_impl(c);
        if (data != Py_None) {
            store32(c, OFF_CONSUMER_SLEEPING, 0);
            return data;
        }
        Py_DECREF(data);
        double remaining = 0;
        if (has_deadline) {
            remaining = deadline - monotonic();
            if (remaining <= 0) {
                store32(c, OFF_CONSUMER_SLEEPING, 0);
                return read_timeout(c, timeout);
            }
        }
        int r = sleep_on(c, OFF_DATA_SEQ, seq, has_deadline, remaining);
        store32(c, OFF_CONSUMER_SLEEPING, 0);
        if (r < 0) return NULL;
    }
}

// ---------------------------------------------------------------------------------- producer

// 1 written, 0 no room, -1 exception set.
static int core_try_write_impl(Core *c, Py_buffer *payload) {
    if (check_open(c) < 0) return -1;
    if (c->sticky) {
        raise_poisoned_with(c->sticky_offset, 0, c->sticky_reason);
        return -1;
    }
    uint64_t n = (uint64_t)payload->len;
    if (n > c->max_payload) {
        PyObject *exc = PyObject_CallFunction(MessageTooLarge, "KK", (unsigned long long)n,
                                              (unsigned long long)c->max_payload);
        if (exc) {
            PyErr_SetObject(MessageTooLarge, exc);
            Py_DECREF(exc);
        }
        return -1;
    }
    const uint64_t cap = c->cap;
    uint64_t head = load64(c, OFF_HEAD);
    uint64_t tail = load64(c, OFF_TAIL);  // the consumer's word: checked before it is computed with
    if (!positions_hold(c, head, tail)) {
        poison_positions(c, head % cap, head, tail);
        return -1;
    }
    uint64_t off = head % cap;
    uint64_t contig = cap - off;
    uint64_t record = 8 + ((n + 7) & ~(uint64_t)7);
    uint64_t need = record <= contig ? record : contig + record;
    if (cap - (head - tail) < need) {
        if (load32(c, OFF_POISONED)) {
            raise_poisoned(c);
            return -1;
        }
        return 0;
    }
    unsigned char *p;
    if (record > contig) {
        uint32_t marker = WRAP_MARKER;
        memcpy(c->data + off, &marker, 4);
        head += contig;
        p = c->data;
    } else {
        p = c->data + off;
    }
    uint32_t crc = copy_crc(0, p + 8, payload->buf, (size_t)n);
    memset(p + 8 + n, 0, record - 8 - n);
    uint32_t length = (uint32_t)n;
    memcpy(p, &length, 4);
    memcpy(p + 4, &crc, 4);
    store64(c, OFF_HEAD, head + record);  // publishes the record
    fence();
    if (claim_sleeper(c, OFF_CONSUMER_SLEEPING) && wake_consumer(c) < 0) return -1;
    return 1;
}

static PyObject *core_try_write(Core *c, PyObject *payload_object) {
    Py_buffer payload;
    if (PyObject_GetBuffer(payload_object, &payload, PyBUF_SIMPLE) < 0) return NULL;
    int r = core_try_write_impl(c, &payload);
    PyBuffer_Release(&payload);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *write_timeout(Core *c, Py_ssize_t n, PyObject *timeout) {
    return raise_timeout(
        PyUnicode_FromFormat("ring %d: no room for %zd bytes within %Ss", c->index, n, timeout));
}

static PyObject *core_write_impl(Core *c, Py_buffer *payload, PyObject *timeout) {
    int r = core_try_write_impl(c, payload);
    if (r != 0) return r < 0 ? NULL : Py_NewRef(Py_None);
    int has_deadline;
    double deadline = 0;
    if (parse_deadline(timeout, &has_deadline, &deadline) < 0) return NULL;
    for (int i = 0; i < c->spin; i++) {
        if (yield_once() < 0) return NULL;
        r = core_try_write_impl(c, payload);
        if (r != 0) return r < 0 ? NULL : Py_NewRef(Py_None);
        if (has_deadline && monotonic() >= deadline) return write_timeout(c, payload->len, timeout);
    }
    for (;;) {
        uint32_t seq = load32(c, OFF_SPACE_SEQ);
        store32(c, OFF_PRODUCER_SLEEPING, 1);
        fence();
        r = core_try_write_impl(c, payload);
        if (r != 0) {
            store32(c, OFF_PRODUCER_SLEEPING, 0);
            return r < 0 ? NULL : Py_NewRef(Py_None);
        }
        double remaining = 0;
        if (has_deadline) {
            remaining = deadline - monotonic();
            if (remaining <= 0) {
                store32(c, OFF_PRODUCER_SLEEPING, 0);
                return write_timeout(c, payload->len, timeout);
            }
        }
        int s = sleep_on(c, OFF_SPACE_SEQ, seq, has_deadline, remaining);
        store32(c, OFF_PRODUCER_SLEEPING, 0);
        if (s < 0) return NULL;
    }
}

static PyObject *core_write(Core *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *timeout;
    if (timeout_argument("write", args, nargs, kwnames, 1, &timeout) < 0) return NULL;
    Py_buffer payload;
    if (PyObject_GetBuffer(args[0], &payload, PyBUF_SIMPLE) < 0) return NULL;
    c->busy++;
    PyObject *result = core_write_impl(c, &payload, timeout);
    c->busy--;
    PyBuffer_Release(&payload);
    return result;
}

// ---------------------------------------------------------------------------------- lifecycle

static PyObject *core_close(Core *c, PyObject *Py_UNUSED(ignored)) {
    if (c->busy) {
        PyErr_SetString(PyExc_BufferError, "the ring is being read or written by another thread");
        return NULL;
    }
    if (c->open) {
        c->open = 0;
        PyBuffer_Release(&c->view);
    }
    Py_RETURN_NONE;
}

// Core(mmap, ring_offset, capacity, max_payload, index, spin, bell): bell -1 for none.
static int core_init(Core *c, PyObject *args, PyObject *kwds) {
    PyObject *mm;
    unsigned long long ring_offset, cap, max_payload;
    int index, spin, bell;
    static char *keywords[] = {"mmap", "ring_offset", "capacity", "max_payload", "index", "spin", "bell", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKKKiii", keywords, &mm, &ring_offset, &cap, &max_payload,
                                     &index, &spin, &bell))
        return -1;
    if (c->open) {
        PyErr_SetString(PyExc_RuntimeError, "Core is already initialised");
        return -1;
    }
    if (cap == 0 || cap % 8 || ring_offset % 8 || max_payload != cap / 2 - 8) {
        PyErr_SetString(PyExc_ValueError, "capacity, ring_offset or max_payload break the layout");
        return -1;
    }
    if (bell < -1) {
        PyErr_SetString(PyExc_ValueError, "bell must be a descriptor, or -1 for none");
        return -1;
    }
    if (PyObject_GetBuffer(mm, &c->view, PyBUF_WRITABLE) < 0) return -1;
    if ((unsigned long long)c->view.len < ring_offset + RING_HEADER_SIZE + cap) {
        PyBuffer_Release(&c->view);
        PyErr_SetString(PyExc_ValueError, "the ring does not lie inside the mapping");
        return -1;
    }
    c->open = 1;
    c->header = (unsigned char *)c->view.buf + ring_offset;
    c->data = c->header + RING_HEADER_SIZE;
    c->cap = cap;
    c->max_payload = max_payload;
    c->max_record = 8 + ((max_payload + 7) & ~(uint64_t)7);
    c->max_head = UINT64_MAX - 2 * cap;
    c->index = index;
    c->spin = spin < 0 ? 0 : spin;
    c->bell = bell;
    return 0;
}

static void core_dealloc(Core *c) {
    if (c->open) PyBuffer_Release(&c->view);
    Py_XDECREF(c->sticky_reason);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef core_methods[] = {
    {"try_read", (PyCFunction)core_try_read, METH_NOARGS, "The next payload (bytes), or None if the ring is empty."},
    {"read", (PyCFunction)(void (*)(void))core_read, METH_FASTCALL | METH_KEYWORDS, "The next payload, waiting for one."},
    {"try_write", (PyCFunction)core_try_write, METH_O, "Publish one payload; False if there is no room now."},
    {"write", (PyCFunction)(void (*)(void))core_write, METH_FASTCALL | METH_KEYWORDS, "Publish one payload, waiting for room."},
    {"close", (PyCFunction)core_close, METH_NOARGS, "Release the mapping's export."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_aetherless_cring.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Core(mmap, ring_offset, capacity, max_payload, index, spin, bell): one ring's reading and "
              "writing (ring.py's Ring does the rest); bell: the consumer's eventfd, -1 for none.",
    .tp_methods = core_methods,
    .tp_init = (initproc)core_init,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)core_dealloc,
};

// bind_errors(CorruptedData, RingPoisoned, RingTimeout, MessageTooLarge): ring.py's classes.
static PyObject *bind_errors(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *a, *b, *t, *m;
    if (!PyArg_ParseTuple(args, "OOOO", &a, &b, &t, &m)) return NULL;
    Py_XSETREF(CorruptedData, Py_NewRef(a));
    Py_XSETREF(RingPoisoned, Py_NewRef(b));
    Py_XSETREF(RingTimeout, Py_NewRef(t));
    Py_XSETREF(MessageTooLarge, Py_NewRef(m));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"bind_errors", bind_errors, METH_VARARGS, "Hand over ring.py's exception classes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_aetherless_cring", "The reading and writing half of aetherless.ring in C.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__aetherless_cring(void) {
    if (aether_crc32_has_vpclmul())
        copy_crc = aether_crc32_copy_vpclmul;
    else if (aether_crc32_has_pclmul())
        copy_crc = aether_crc32_copy_pclmul;
    else
        copy_crc = aether_crc32_copy_slice8;
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddIntConstant(m, "ABI", CRING_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
