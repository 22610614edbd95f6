#!/usr/bin/env python3
"""Buckets the samples of a perf profile of the worker draining a backlog
(perf record -g -p <worker>, bench/queue_mode.sh) by what the consumer does:
reading (the ingest queue's SPI cursor over the stream: BRIN bitmap, heap
fetch, the xmin = ANY filter, the copy into SPI's tuple table; or logical
decoding), folding (aggregate_fold, the rest of fold_event), spilling, and
the apply (the upsert of the groups, the rest of apply_batches).  Reads
`perf script -F ip,sym` on stdin; an optional argument is the drain's wall
time in seconds, to print an estimate of seconds per bucket.

    perf script -i perf-drain-queue.data -F ip,sym | bench/perf_drain.py 14.2

A sample goes to the first bucket whose frames are all on its stack, so the
order matters: apply first (it may fold nothing), then spill and fold (which
run under the reader's loop), then the reader's own parts.  Needs whole
stacks: record with --call-graph dwarf (PostgreSQL is built without frame
pointers, so -g alone loses the callers of most frames).
"""
import collections
import sys

BUCKETS = [
    ("apply: upsert of the groups (aggregate_upsert_groups)", ("aggregate_upsert_groups",)),
    ("apply: other (apply_batches: positions, outbox, commit)", ("apply_batches",)),
    ("spill of the batch (agg_spill)", ("agg_spill",)),
    ("fold: aggregate_fold (group lookup, transition functions)", ("aggregate_fold",)),
    ("fold: other (fold_event: row, activations' match)", ("fold_event",)),
    ("queue read: BRIN bitmap (MultiExecBitmapIndexScan)", ("PortalRunFetch", "MultiExecBitmapIndexScan")),
    ("queue read: xmin = ANY filter (hashed ScalarArrayOp)", ("PortalRunFetch", "ExecEvalHashedScalarArrayOp")),
    ("queue read: xmin = ANY filter (ScalarArrayOp)", ("PortalRunFetch", "ExecEvalScalarArrayOp")),
    ("queue read: heap pages (ReadBufferExtended)", ("PortalRunFetch", "ReadBufferExtended")),
    ("queue read: visibility (HeapTupleSatisfiesVisibility)", ("PortalRunFetch", "HeapTupleSatisfiesVisibility")),
    ("queue read: row copied into SPI's tuple table (spi_printtup)", ("PortalRunFetch", "spi_printtup")),
    ("queue read: deforming rows for the quals (slot_getsomeattrs_int)", ("PortalRunFetch", "slot_getsomeattrs_int")),
    ("queue read: other executor (bitmap heap scan, quals, Append)", ("PortalRunFetch",)),
    ("queue read: cursor open / plan (SPI_cursor_open_with_args)", ("SPI_cursor_open_with_args",)),
    ("queue read: tuple conversion (execute_attr_map_slot)", ("execute_attr_map_slot",)),
    ("queue read: other (queue_txns, ticks, slots)", ("queue_read_available",)),
    ("decode: reorder buffer spilled to disk (write)", ("decode_available", "ksys_write")),
    ("decode: reorder buffer read back from disk (FileRead)", ("decode_available", "FileRead")),
    ("decode: reorder buffer replay (ReorderBufferCommit, not folding)", ("ReorderBufferCommit",)),
    ("decode: WAL records into the reorder buffer", ("LogicalDecodingProcessRecord",)),
    ("decode: reading WAL (XLogReadRecord)", ("XLogReadRecord",)),
    ("decode: other (decode_available)", ("decode_available",)),
    ("commit (CommitTransactionCommand)", ("CommitTransactionCommand",)),
    ("other", ()),
]


def stacks(lines):
    stack = []
    for line in lines:
        line = line.strip()
        if not line:
            if stack:
                yield stack
            stack = []
            continue
        parts = line.split(None, 1)
        sym = parts[1] if len(parts) > 1 else "?"
        # "ExecScan (inlined)" and "func+0x12" forms
        sym = sym.split(" (inlined)")[0].split("+0x")[0]
        stack.append(sym)
    if stack:
        yield stack


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else None
    counts = collections.Counter()
    total = 0
    for stack in stacks(sys.stdin):
        frames = set(stack)
        total += 1
        for label, needed in BUCKETS:
            if all(f in frames for f in needed):
                counts[label] += 1
                break
    if total == 0:
        print("  no samples")
        return
    for label, _ in BUCKETS:
        if counts[label] == 0:
            continue
        pct = 100.0 * counts[label] / total
        est = "  ~%6.2f s" % (seconds * pct / 100) if seconds else ""
        print("  %5.1f%%%s  %s" % (pct, est, label))
    print("  (%d samples)" % total)


if __name__ == "__main__":
    main()
