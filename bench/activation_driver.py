#!/usr/bin/env python3
"""bench/activation_driver.py: the client side of bench/activation.sh.

Talks to the server through libpq with ctypes (no psycopg needed: only the
libpq5 that psql already uses).  Subcommands:

  latency   producers -> listener end-to-end latency.  Starts the listener
            (stream_listen, or `rawlisten` below for the raw NOTIFY
            baseline) with its stdout read by a thread that timestamps each
            line as it arrives; waits until a warm-up event comes through
            (the listener has LISTENed, the worker has loaded the
            activation); then N producer processes, one connection each,
            insert single events in autocommit (one transaction each) at
            RATE/s each (exponential inter-arrival times, as pgbench -R),
            each recording the time its INSERT returned, i.e. the commit
            returned.  Every event has a unique user_id (the activation's
            key); latency = line arrival - commit returned.  Appends the
            latencies (ms) to --out and prints one summary line.
  rawlisten LISTEN on a channel and print every notification's payload, one
            line each, flushed per line (the baseline's stream_listen).
  capture   run a command, write "epoch<TAB>line" for every line of its
            stdout to --out until SIGTERM (then stop the command).
  stats     n / p50 / p99 / max of the numbers (ms) in the files given.
  absence   from a capture of stream_listen on an on_absence channel:
            arrival - due_at (ms) of every line, written to --out.
"""
import argparse
import ctypes
import ctypes.util
import json
import math
import multiprocessing as mp
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

# ------------------------------------------------------------------ libpq

_pq = ctypes.CDLL(ctypes.util.find_library("pq") or "libpq.so.5")
_vp, _cp, _int = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int


class PGnotify(ctypes.Structure):
    _fields_ = [("relname", _cp), ("be_pid", _int), ("extra", _cp), ("next", _vp)]


for name, res, args in [
    ("PQconnectdb", _vp, [_cp]),
    ("PQstatus", _int, [_vp]),
    ("PQerrorMessage", _cp, [_vp]),
    ("PQfinish", None, [_vp]),
    ("PQexec", _vp, [_vp, _cp]),
    ("PQprepare", _vp, [_vp, _cp, _cp, _int, _vp]),
    ("PQexecPrepared", _vp, [_vp, _cp, _int, ctypes.POINTER(_cp), _vp, _vp, _int]),
    ("PQresultStatus", _int, [_vp]),
    ("PQresultErrorMessage", _cp, [_vp]),
    ("PQclear", None, [_vp]),
    ("PQsocket", _int, [_vp]),
    ("PQconsumeInput", _int, [_vp]),
    ("PQnotifies", ctypes.POINTER(PGnotify), [_vp]),
    ("PQfreemem", None, [_vp]),
]:
    f = getattr(_pq, name)
    f.restype = res
    f.argtypes = args

PGRES_COMMAND_OK, PGRES_TUPLES_OK = 1, 2


class Conn:
    def __init__(self, conninfo):
        self.c = _pq.PQconnectdb(conninfo.encode())
        if _pq.PQstatus(self.c) != 0:
            raise SystemExit("connection failed: %s" % _pq.PQerrorMessage(self.c).decode())

    def _check(self, r, what):
        st = _pq.PQresultStatus(r)
        if st not in (PGRES_COMMAND_OK, PGRES_TUPLES_OK):
            msg = _pq.PQresultErrorMessage(r).decode()
            _pq.PQclear(r)
            raise SystemExit("%s failed: %s" % (what, msg.strip()))
        _pq.PQclear(r)

    def execute(self, sql):
        self._check(_pq.PQexec(self.c, sql.encode()), sql[:60])

    def prepare(self, name, sql, nparams):
        self._check(_pq.PQprepare(self.c, name.encode(), sql.encode(), nparams, None), "prepare")

    def exec_prepared(self, name, params):
        arr = (_cp * len(params))(*[p.encode() for p in params])
        self._check(_pq.PQexecPrepared(self.c, name.encode(), len(params), arr, None, None, 0), name)

    def close(self):
        _pq.PQfinish(self.c)


# ------------------------------------------------------------------ helpers

def pct(sorted_vals, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def summary(vals):
    v = sorted(vals)
    if not v:
        return "n=0 p50=nan p99=nan max=nan mean=nan"
    return "n=%d p50=%.2f p99=%.2f max=%.2f mean=%.2f" % (
        len(v), pct(v, 50), pct(v, 99), v[-1], sum(v) / len(v))


def key_of(line):
    try:
        o = json.loads(line)
    except ValueError:
        return None
    k = o.get("key")
    if k is None:
        k = o.get("user_id")
    return k


_TS = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?([+-]\d\d(?::?\d\d)?)?$")


def parse_ts(s):
    """A timestamptz as row_to_json writes it (fractions of any length)."""
    m = _TS.match(s)
    if not m:
        raise ValueError("bad timestamp %r" % s)
    frac = (m.group(3) or "0")[:6].ljust(6, "0")
    tz = m.group(4) or "+00:00"
    if len(tz) == 3:
        tz += ":00"
    elif ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    return datetime.fromisoformat("%sT%s.%s%s" % (m.group(1), m.group(2), frac, tz)).timestamp()


INSERT = ("INSERT INTO {table} (event_name, user_id, session_id, properties, context) "
          "VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)")
CONTEXT = json.dumps({"ip": "10.1.2.3", "locale": "en-US",
                      "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"})


def event_params(name, key, rng):
    p = rng.randint(1, 2000)
    props = json.dumps({"product_id": "prod_%d" % p, "sku": "SKU-%06d" % p,
                        "price": round(5 + rng.random() * 195, 2), "currency": "EUR",
                        "quantity": 1 + p % 3})
    return [name, key, "s_" + key, props, CONTEXT]


# ------------------------------------------------------------------ latency

def producer(conninfo, table, tag, idx, n, rate, start, q):
    try:
        q.put(("ok", produce(conninfo, table, tag, idx, n, rate, start)))
    except BaseException as e:        # SystemExit from Conn included
        q.put(("error", "producer %d: %s" % (idx, e)))


def produce(conninfo, table, tag, idx, n, rate, start):
    rng = random.Random("%s-%d" % (tag, idx))
    conn = Conn(conninfo)
    conn.prepare("ins", INSERT.format(table=table), 5)
    recs = []
    start.wait()
    t_next = time.time() + rng.random() / rate        # random phase
    for i in range(n):
        now = time.time()
        if t_next > now:
            time.sleep(t_next - now)
        key = "%s_%d_%d" % (tag, idx, i)
        params = event_params("purchase", key, rng)
        t0 = time.time()
        conn.exec_prepared("ins", params)
        t1 = time.time()
        recs.append((key, t0, t1))
        t_next += rng.expovariate(rate)
    conn.close()
    return recs


def cmd_latency(a):
    err = open(a.listener_log, "ab") if a.listener_log else None
    proc = subprocess.Popen(a.listen, stdout=subprocess.PIPE, stderr=err)
    try:
        latency(a, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def latency(a, proc):
    lines = []                      # (arrival, raw line)
    lock = threading.Lock()

    def reader():
        for line in iter(proc.stdout.readline, b""):
            t = time.time()
            with lock:
                lines.append((t, line))
    th = threading.Thread(target=reader, daemon=True)
    th.start()

    # warm-up: the listener is listening and the activation is loaded
    conn = Conn(a.conninfo)
    conn.prepare("ins", INSERT.format(table=a.table), 5)
    rng = random.Random(a.tag)
    ready = False
    deadline = time.time() + a.ready_timeout
    i = 0
    while time.time() < deadline and not ready:
        conn.exec_prepared("ins", event_params("purchase", "warm_%s_%d" % (a.tag, i), rng))
        i += 1
        t_end = time.time() + 0.5
        while time.time() < t_end:
            with lock:
                ready = any(b"warm_" in l for _, l in lines)
            if ready or proc.poll() is not None:
                break
            time.sleep(0.01)
        if proc.poll() is not None:
            raise SystemExit("listener exited (%s) before it was ready" % proc.returncode)
    if not ready:
        proc.terminate()
        raise SystemExit("no warm-up event came through the listener within %ds" % a.ready_timeout)
    time.sleep(0.5)                 # let any further warm-up lines arrive
    with lock:
        skip = len(lines)
    conn.close()

    # producers
    per = [a.events // a.producers + (1 if k < a.events % a.producers else 0)
           for k in range(a.producers)]
    start = mp.Event()
    q = mp.Queue()
    procs = [mp.Process(target=producer,
                        args=(a.conninfo, a.table, a.tag, k, per[k], a.rate, start, q))
             for k in range(a.producers)]
    for p in procs:
        p.start()
    time.sleep(0.3)                 # connected and prepared
    t_start = time.time()
    start.set()
    recs, errors, done = [], [], 0
    limit = time.time() + 60 + 5 * a.events / a.rate / a.producers
    while done < len(procs):
        try:
            status, r = q.get(timeout=1)
        except Exception:           # queue.Empty
            if time.time() > limit or not any(p.is_alive() for p in procs):
                errors.append("producers did not finish")
                break
            continue
        done += 1
        if status == "ok":
            recs.extend(r)
        else:
            errors.append(r)
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.terminate()
    if errors:
        raise SystemExit("; ".join(errors))
    t_prod = time.time() - t_start
    commit = {k: t1 for k, _, t1 in recs}
    insert_ms = [(t1 - t0) * 1000 for _, t0, t1 in recs]

    # wait for the lines (until all came, or nothing new for --drain s)
    last_n, last_t = -1, time.time()
    while True:
        with lock:
            got = lines[skip:]
        n = len(got)
        if n >= len(commit):
            seen = {key_of(l) for _, l in got}
            if all(k in seen for k in commit):
                break
        if n != last_n:
            last_n, last_t = n, time.time()
        elif time.time() - last_t > a.drain:
            break
        time.sleep(0.05)
    lat, seen, dup, other = [], set(), 0, 0
    with lock:
        got = lines[skip:]
    for t, l in got:
        k = key_of(l)
        if k not in commit:
            other += 1
            continue
        if k in seen:
            dup += 1
            continue
        seen.add(k)
        lat.append((t - commit[k]) * 1000)
    missing = len(commit) - len(seen)
    if a.out:
        with open(a.out, "a") as f:
            f.write("".join("%.3f\n" % x for x in lat))
    if a.insert_out:
        with open(a.insert_out, "a") as f:
            f.write("".join("%.3f\n" % x for x in insert_ms))
    print("%s missing=%d dup=%d other=%d sent=%d rate=%.0f/s insert_p50=%.2f" % (
        summary(lat), missing, dup, other, len(commit), len(commit) / t_prod,
        pct(sorted(insert_ms), 50)))


# ------------------------------------------------------------------ listeners

def cmd_rawlisten(a):
    conn = Conn(a.conninfo)
    conn.execute("LISTEN %s" % a.channel)
    sock = _pq.PQsocket(conn.c)
    out = sys.stdout.buffer
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        select.select([sock], [], [])
        if not _pq.PQconsumeInput(conn.c):
            raise SystemExit("connection lost: %s" % _pq.PQerrorMessage(conn.c).decode())
        while True:
            n = _pq.PQnotifies(conn.c)
            if not n:
                break
            out.write(n.contents.extra + b"\n")
            out.flush()
            _pq.PQfreemem(n)


def cmd_capture(a):
    proc = subprocess.Popen(a.cmd, stdout=subprocess.PIPE)
    stop = threading.Event()

    def term(*_):
        stop.set()
        proc.terminate()
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    with open(a.out, "wb") as f:
        for line in iter(proc.stdout.readline, b""):
            f.write(b"%.6f\t" % time.time() + line)
            f.flush()
    proc.wait()


def cmd_stats(a):
    vals = []
    for fn in a.files:
        with open(fn) as f:
            vals.extend(float(x) for x in f if x.strip())
    print(summary(vals))


def cmd_absence(a):
    out = []
    with open(a.capture, "rb") as f:
        for raw in f:
            t, _, line = raw.partition(b"\t")
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if o.get("activation") != a.activation or not o.get("due_at"):
                continue
            out.append((float(t) - parse_ts(o["due_at"])) * 1000)
    with open(a.out, "w") as f:
        f.write("".join("%.3f\n" % x for x in out))
    print(summary(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--conninfo", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--tag", required=True, help="prefix of the events' user_id")
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--events", type=int, default=2000, help="events in all (split over the producers)")
    p.add_argument("--rate", type=float, default=200, help="events/s of each producer")
    p.add_argument("--out", help="append the latencies (ms) here")
    p.add_argument("--insert-out", help="append the INSERT+COMMIT round trips (ms) here")
    p.add_argument("--listener-log", help="the listener's stderr goes here (default: ours)")
    p.add_argument("--drain", type=float, default=15, help="give up waiting after this long without a new line")
    p.add_argument("--ready-timeout", type=int, default=60)
    p.add_argument("listen", nargs="+", help="-- the listener command")
    p.set_defaults(func=cmd_latency)
    p = sub.add_parser("rawlisten")
    p.add_argument("--conninfo", required=True)
    p.add_argument("--channel", required=True)
    p.set_defaults(func=cmd_rawlisten)
    p = sub.add_parser("capture")
    p.add_argument("--out", required=True)
    p.add_argument("cmd", nargs="+")
    p.set_defaults(func=cmd_capture)
    p = sub.add_parser("stats")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("absence")
    p.add_argument("--capture", required=True)
    p.add_argument("--activation", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_absence)
    a = ap.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
