# stream.ingest's memory is bounded by its chunk (issue 15, item 6).
#
# stream.ingest maps a JSON array to rows and inserts them 10,000 at a time
# (src/stream/ingest.c).  The input array itself is in memory (it is the
# argument); nothing else may grow with the number of events.  One call
# ingests INGEST_MEMORY_EVENTS events (300,000 by default, half envelope-named,
# half Segment messages) stored in a table without compression, so that the
# detoasted argument's size is known; the backend's peak resident memory
# (VmHWM of /proc/<pid>/status, read by the same backend before and after)
# may grow by the argument plus a fixed allowance, not by anything per event.
#
# Measured 2026-12-02 on the 2-core machine (shared_buffers 16MB; growth of
# the backend's peak RSS over one call, the argument included):
#
#   events (argument)     every chunk kept (before)   one chunk (now)
#   300,000 (55 MB)       +2,045 MB                    +87 MB
#   1,000,000 (184 MB)    +6,754 MB                    +216 MB
#
# i.e. about 6.7 kB an event before (jsonb copies and StringInfo buffers of
# at least 1 kB each, kept until the end of the call), and now the argument
# plus a constant 32 MB (one chunk, the shared buffers this backend touched,
# caches).  INGEST_MEMORY_EVENTS=1000000 reproduces the second line (a jsonb
# value cannot exceed 256 MB, so the events are small).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $n = $ENV{INGEST_MEMORY_EVENTS} // 300000;
# what one chunk (and the executor, triggers, caches) may add on top of the
# argument (the old code added about 6.7 kB per event: 2 GB here)
my $allowance_mb = 64;

# a small shared_buffers: the pages of shared memory a backend touches count
# in its resident set too
my $node = StreamEventsTest::new_node('ingest_memory', q{shared_buffers = '16MB'});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION stream_events');
$node->safe_psql('postgres', q{SELECT stream.create_stream('mem')});

# the argument, stored uncompressed (its stored size is its size in memory)
$node->safe_psql('postgres', qq{
	CREATE TABLE input (j jsonb);
	ALTER TABLE input ALTER j SET STORAGE EXTERNAL;
	INSERT INTO input SELECT jsonb_agg(CASE WHEN g % 2 = 0 THEN
		jsonb_build_object('event_id', md5('m' || g)::uuid, 'event_name', 'page_view',
			'user_id', 'u' || (g % 5000),
			'properties', jsonb_build_object('path', '/p/' || g, 'price', g % 100))
	  ELSE
		jsonb_build_object('type', 'track', 'event', 'Order Completed',
			'messageId', 'node-' || g, 'anonymousId', 'a' || (g % 7000),
			'properties', jsonb_build_object('total', g % 1000),
			'context', jsonb_build_object('ip', '10.0.0.1'), 'sentAt', 'now')
	  END) FROM generate_series(1, $n) g;
});
my $arg_mb = $node->safe_psql('postgres', q{SELECT pg_column_size(j) / 1048576 FROM input});

# one session: peak before, the call, peak after
my $hwm = q{(regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+) kB'))[1]::bigint};
my $out = $node->safe_psql('postgres', qq{
	SELECT $hwm;
	SELECT accepted FROM input, stream.ingest('mem', j);
	SELECT $hwm;
});
my ($before_kb, $accepted, $after_kb) = split /\n/, $out;
my $growth_mb = int(($after_kb - $before_kb) / 1024);
diag("stream.ingest of $n events: argument ${arg_mb} MB, peak RSS "
	  . int($before_kb / 1024) . " -> " . int($after_kb / 1024)
	  . " MB (+${growth_mb} MB)");

is($accepted, $n, "one call ingests all $n events");
is($node->safe_psql('postgres', q{SELECT count(*) FROM mem}), $n, 'all are stored');
cmp_ok($growth_mb, '<', $arg_mb + $allowance_mb,
	"peak memory grows by the argument (${arg_mb} MB) plus less than ${allowance_mb} MB, "
	  . "not per event (+${growth_mb} MB)");

$node->stop;
done_testing();
