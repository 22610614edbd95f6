# The boundary of a backfill, and readers of a stream while maintenance
# adopts the events of its default partition (the flake of TAP 010: "after
# backfill: ... got 0/225", extra groups only, gone a moment later).
#
# 1. A statement that reads the stream while maintenance moves events out
#    of its default partition into a new partition sees every event once.
#    The move (DELETE from the default partition, INSERT into the new table,
#    ATTACH) commits at once, but ATTACH takes only SHARE UPDATE EXCLUSIVE on
#    the stream: a READ COMMITTED statement that had listed the partitions
#    before (the new one not among them) waited for the default partition's
#    lock, then took its snapshot after the commit: the moved events were
#    neither in the default partition nor in a partition it scans.  TAP
#    010's oracle was such a statement, run while the worker adopted the old
#    events its producers had sent: the aggregate had every group the
#    oracle had, and more (the moved events' groups).  Here the reader is
#    the oracle of an aggregate (one statement) started while a maintenance
#    that moved events holds its locks; it must wait, then see them.
# 2. Aggregates created, one after another, while pgbench producers run
#    transactions that span the backfills' snapshots (a sleep between the
#    inserts, savepoints rolled back, rolled back transactions, late events
#    that maintenance adopts meanwhile) equal their defining query after
#    stream.flush: no event twice, none lost, at the boundary between a
#    backfill and the live consumer.
#
# Runs in both consumer modes: logical decoding, and the ingest queue when
# make test runs it again with STREAM_EVENTS_TEST_MODE=queue (StreamEventsTest.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

# the worker maintains at its start, then once an hour: the test moves events itself
my $node = StreamEventsTest::new_node('backfill_boundary', 'max_connections = 40',
	'stream_events.naptime = 3600');
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub wait_for { return StreamEventsTest::poll_until($node, 'postgres', @_); }

my %query;

# "missing/extra" rows between an aggregate and its defining query, in one
# statement (one snapshot)
sub oracle_sql
{
	my ($agg) = @_;
	return qq{WITH o AS MATERIALIZED ($query{$agg}), v AS MATERIALIZED (TABLE $agg)
SELECT (SELECT count(*) FROM (TABLE o EXCEPT ALL TABLE v) m) || '/' ||
       (SELECT count(*) FROM (TABLE v EXCEPT ALL TABLE o) e)};
}

sub oracle_equal
{
	my ($agg, $what) = @_;
	is(sql(oracle_sql($agg)), '0/0', "$what: $agg equals its defining query")
	  or diag(
		"rows of the defining query not in $agg (first 5):\n",
		sql("SELECT * FROM (($query{$agg}) EXCEPT ALL TABLE $agg) d LIMIT 5"),
		"\nrows of $agg not in the defining query (first 5):\n",
		sql("SELECT * FROM (TABLE $agg EXCEPT ALL ($query{$agg})) d LIMIT 5"),
		"\nstream.aggregates:\n",
		sql(q{SELECT name, state, applied_lsn, events_applied, events_backfilled, last_error
		      FROM stream.aggregates ORDER BY 1}));
}

sub create_aggregate
{
	my ($agg, $q) = @_;
	$query{$agg} = $q;
	sql("SELECT stream.create_aggregate('$agg', \$q\$ $q \$q\$)");
}

sql('CREATE EXTENSION stream_events');
sql(q{SELECT stream.create_stream('clicks')});
is(wait_for(q{SELECT runs > 0 FROM stream.worker_status() WHERE datname = current_database()}, 't'),
	't', "the worker's first maintenance ran");

# ---- 1. a reader waiting for maintenance's move sees every event once ----
create_aggregate('per_hour', q{
SELECT stream.tumble(occurred_at, '1 hour') AS hour, event_name, count(*) AS n,
       sum((properties->>'v')::int) AS v
FROM clicks GROUP BY 1, 2});

my $maint = $node->background_psql('postgres');
my $reader = $node->background_psql('postgres');
for my $round (1 .. 3)
{
	# events of a day that has no partition yet (the default partition's),
	# all in that one UTC day whatever the time now (from 01:01 to 04:20:
	# spread over two days, one maintenance could adopt one day's events and
	# leave the other's for its next run), and current ones
	my $days = 10 + 2 * $round;
	sql(qq{INSERT INTO clicks (event_name, occurred_at, user_id, properties)
SELECT (ARRAY['view', 'cart', 'buy'])[1 + i % 3],
       date_trunc('day', now(), 'UTC') - interval '$days days' + interval '1 hour' + i * interval '1 minute',
       'u' || (i % 7), jsonb_build_object('v', i)
FROM generate_series(1, 200) i});
	sql(q{INSERT INTO clicks (event_name, user_id, properties)
SELECT 'view', 'u' || (i % 7), jsonb_build_object('v', i) FROM generate_series(1, 50) i});
	sql(q{SELECT stream.flush('per_hour', '60 s')});
	my $total = sql('SELECT count(*) FROM clicks');

	# maintenance adopts them and keeps its locks (queue mode: once the
	# queue's reader has released their transactions)
	my $moved = 0;
	for my $try (1 .. 100)
	{
		$maint->query_safe('BEGIN');
		$moved = $maint->query_safe(q{SELECT rows_moved FROM stream.maintain('clicks')});
		last if $moved > 0;
		$maint->query_safe('ROLLBACK');
		usleep(100_000);
	}
	cmp_ok($moved, '>=', 200, "round $round: maintenance moved the default partition's events");

	# the oracle, started now, waits for maintenance's locks
	$reader->query_until(qr/reading\n/, "\\echo reading\n"
		  . "SELECT '041 oracle: ' || (" . oracle_sql('per_hour') . ") || ' ' || (SELECT count(*) FROM clicks);\n");
	is( wait_for(q{SELECT count(*) FROM pg_stat_activity
		  WHERE wait_event_type = 'Lock' AND query LIKE '%041 oracle%' AND pid <> pg_backend_pid()}, '1'),
		'1', "round $round: the reader waits for maintenance");
	$maint->query_safe('COMMIT');
	my $got = $reader->query_until(qr/041 oracle: [^\n]*\n/, '');
	$got =~ s/^.*041 oracle: //s;
	$got =~ s/\s+$//;
	is($got, "0/0 $total",
		"round $round: a statement waiting for the move sees every event once (aggregate equal, all $total events)");
	oracle_equal('per_hour', "round $round, after the move");
}
$maint->quit;
$reader->quit;
sql(q{SELECT stream.drop_aggregate('per_hour')});

# ---- 2. aggregates created while transactions span their backfill -------
my $events = q{
\set r random(1, 1000000000)
\set off random(-2592000, 3600)
BEGIN;
INSERT INTO clicks (event_name, occurred_at, user_id, properties) VALUES
  ((ARRAY['view','cart','buy'])[1 + :r % 3], now() + (:off || ' seconds')::interval,
   'u' || (:r % 17), jsonb_build_object('v', :r % 100));
SELECT pg_sleep((:r % 40) / 1000.0);
SAVEPOINT s;
INSERT INTO clicks (event_name, user_id, properties) VALUES ('cart', 'u' || (:r % 5), jsonb_build_object('v', 1));
\if :r % 7 = 0
ROLLBACK TO SAVEPOINT s;
\endif
INSERT INTO clicks (event_name, occurred_at, user_id, properties) VALUES
  ('buy', now() - (:r % 3600) * interval '1 second', 'u' || (:r % 11), jsonb_build_object('v', :r % 13));
\if :r % 10 = 0
ROLLBACK;
\else
COMMIT;
\endif
};
# late events get their partition meanwhile (as the worker would, more often)
my $maintain = q{SELECT count(*) FROM stream.maintain('clicks', false);};

my $partitions = sql(q{SELECT partitions FROM stream.stream_list WHERE stream_name = 'clicks'});
my $basedir = $node->basedir;
PostgreSQL::Test::Utils::append_to_file("$basedir/041_events", $events);
PostgreSQL::Test::Utils::append_to_file("$basedir/041_maintain", $maintain);
my ($out, $err) = ('', '');
my $seconds = 10;
my $pgbench = IPC::Run::start(
	[
		'pgbench', '--no-vacuum', '--client=5', '--jobs=5', "--time=$seconds",
		'-h', $node->host, '-p', $node->port,
		'-f', "$basedir/041_events\@40", '-f', "$basedir/041_maintain\@1", 'postgres'
	],
	'>', \$out, '2>', \$err);
my $start = time;

my @shapes = (
	q{SELECT stream.tumble(occurred_at, '1 hour') AS hour, event_name, count(*) AS n,
	         sum((properties->>'v')::int) AS v FROM clicks GROUP BY 1, 2},
	q{SELECT user_id, count(*) AS n, sum((properties->>'v')::int) AS v, max(occurred_at) AS last_seen
	  FROM clicks GROUP BY 1},
	q{SELECT w.window_start, event_name, count(*) AS n FROM clicks
	  CROSS JOIN LATERAL stream.hop(occurred_at, '6 hours', '2 hours') AS w(window_start) GROUP BY 1, 2});
my @aggs;
my $i = 0;
usleep(500_000);
while (time - $start < $seconds - 1.5)
{
	my $agg = 'spans_' . (++$i);
	create_aggregate($agg, $shapes[$i % @shapes]);
	push @aggs, $agg;
	# its backfill ends (a consistent point waits for the transactions in progress)
	wait_for(qq{SELECT applied_lsn IS NOT NULL FROM stream.aggregate_defs WHERE view = '$agg'::regclass},
		't', 60);
	usleep(300_000);
}
$pgbench->finish;
like($out, qr/processed: [1-9]/, 'pgbench producers ran') or diag($err);
note($out =~ /(number of transactions actually processed: \d+)/ ? $1 : $out);
cmp_ok(sql(q{SELECT partitions FROM stream.stream_list WHERE stream_name = 'clicks'}),
	'>', $partitions + 5, 'maintenance adopted late events meanwhile (partitions created)');
cmp_ok(scalar(@aggs), '>=', 3, 'aggregates were created during the load');
note(scalar(@aggs) . " aggregates created during $seconds s of producers");
sql(q{SELECT stream.flush(timeout => '120 s')});
oracle_equal($_, 'created under load') for @aggs;
is(sql(q{SELECT count(*) FROM stream.aggregates WHERE state <> 'running' OR last_error IS NOT NULL}),
	'0', 'every aggregate runs without error');

$node->stop;
done_testing();
