#!/usr/bin/env python3
"""Buckets the samples of a perf profile of a COPY (perf record -g) by what
the stream does per row, so that a stream COPY and a plain COPY can be put
side by side.  Reads `perf script -F ip,sym` on stdin; an optional argument is
the COPY's wall time in seconds, to print an estimate of seconds per bucket.

    perf script -i perf-copy-stream.data -F ip,sym | bench/perf_breakdown.py 15.2

A sample goes to the first bucket whose frames are all on its stack.  Frames
of static functions (check_exclusion_or_unique_constraint, the extension's
own when its library was replaced) show as [unknown]; the buckets only use
exported PostgreSQL functions, so they still work.
"""
import collections
import sys

BUCKETS = [
    ("trigger: dedup pre-check (ExecCheckIndexConstraints)", ("ExecBRInsertTriggers", "ExecCheckIndexConstraints")),
    ("trigger: dedup index insert (ExecInsertIndexTuples)", ("ExecBRInsertTriggers", "ExecInsertIndexTuples")),
    ("trigger: dedup heap insert (speculative)", ("ExecBRInsertTriggers", "heap_insert")),
    ("trigger: dedup speculative lock/complete", ("ExecBRInsertTriggers", "SpeculativeInsertionLockAcquire")),
    ("trigger: dedup speculative lock/complete", ("ExecBRInsertTriggers", "SpeculativeInsertionLockRelease")),
    ("trigger: dedup speculative lock/complete", ("ExecBRInsertTriggers", "heap_finish_speculative")),
    ("trigger: heap_form_tuple", ("ExecBRInsertTriggers", "heap_form_tuple")),
    ("trigger: heap_deform_tuple", ("ExecBRInsertTriggers", "heap_deform_tuple")),
    ("trigger: other (fmgr, slot copies, checks, stats)", ("ExecBRInsertTriggers",)),
    ("partition routing (ExecFindPartition)", ("ExecFindPartition",)),
    ("COPY parsing and input functions (NextCopyFrom)", ("NextCopyFrom",)),
    ("table index insert (ExecInsertIndexTuples)", ("ExecInsertIndexTuples",)),
    ("table heap insert, batched (heap_multi_insert)", ("heap_multi_insert",)),
    ("table heap insert, row by row (heap_insert)", ("heap_insert",)),
    ("commit, WAL flush", ("CommitTransactionCommand",)),
    ("other, in CopyFrom", ("CopyFrom",)),
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
        stack.append(parts[1] if len(parts) > 1 else "?")
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
        print("no samples")
        return
    seen = set()
    for label, _ in BUCKETS:
        if label in seen or counts[label] == 0:
            continue
        seen.add(label)
        pct = 100.0 * counts[label] / total
        est = "  ~%5.2f s" % (seconds * pct / 100) if seconds else ""
        print("  %5.1f%%%s  %s" % (pct, est, label))
    print("  (%d samples)" % total)


if __name__ == "__main__":
    main()
