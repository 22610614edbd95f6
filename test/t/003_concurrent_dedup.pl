# Many producers send overlapping sets of event_ids at the same time, through
# INSERT (multi-row and single-row, in and out of explicit transactions) and
# stream.ingest: each event is stored exactly once, every other attempt is
# counted as a duplicate, and no producer sees an error.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

# events of 2003 get partitions of their own (docs/streams.md, the bound)
my $node = StreamEventsTest::new_node('dedup', q{max_connections = 20},
	q{stream_events.max_partitions_behind = 100000});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION stream_events');
$node->safe_psql('postgres', q{SELECT stream.create_stream('clicks')});

my $clients = 4;
my $batches = 500;    # transactions per client
my $per_batch = 4;    # event ids per transaction (the scripts below split 4)
my $ids = $batches * $per_batch;
my $attempts = $clients * $ids;
my $xacts = $clients * $batches;

# Every client walks through batches 1, 2, 3 ... in the same order (the
# variable i lives per client and starts at 0), so all clients send the same
# ids at about the same moment, each through whichever script pgbench picks.
# Ids are inserted in ascending order in every script, so waits never form a
# cycle.  One id in ten has an occurred_at in the first week of 2001, whose
# partitions are created first (a partition adopted while producers run is
# the subject of the last test below).
my $id  = q{md5('ev' || g)::uuid};
my $occ = q{CASE WHEN g % 10 = 0
                 THEN timestamptz '2001-01-01 00:00+00' + (g % 7) * interval '1 day' + g * interval '1 second'
                 ELSE now() END};
$node->safe_psql('postgres',
	q{SELECT stream._ensure_partition('clicks', timestamptz '2001-01-01 00:00+00' + d * interval '1 day', '1 day')
	  FROM generate_series(0, 6) d});
my $range = qq{generate_series((:i - 1) * $per_batch + 1, :i * $per_batch) g};

my %scripts = (
	# multi-row INSERT, after a rolled-back attempt of the same batch
	'003_insert_multi@1' => qq{
\\set i :i + 1
BEGIN;
INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
SELECT $id, 'rolled_back', $occ, 'c' || :client_id FROM $range ORDER BY g;
ROLLBACK;
INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
SELECT $id, 'page_view', $occ, 'c' || :client_id FROM $range ORDER BY g;
},
	# four single-row INSERTs in one explicit transaction
	'003_insert_single@1' => qq{
\\set i :i + 1
BEGIN;
INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
SELECT $id, 'page_view', $occ, 'c' || :client_id FROM generate_series((:i - 1) * $per_batch + 1, (:i - 1) * $per_batch + 1) g;
INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
SELECT $id, 'page_view', $occ, 'c' || :client_id FROM generate_series((:i - 1) * $per_batch + 2, (:i - 1) * $per_batch + 2) g;
INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
SELECT $id, 'page_view', $occ, 'c' || :client_id FROM generate_series((:i - 1) * $per_batch + 3, (:i - 1) * $per_batch + 3) g;
INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
SELECT $id, 'page_view', $occ, 'c' || :client_id FROM generate_series((:i - 1) * $per_batch + 4, :i * $per_batch) g;
COMMIT;
},
	# two autocommit INSERTs of two rows: each one its own transaction
	'003_insert_autocommit@1' => qq{
\\set i :i + 1
INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
SELECT $id, 'page_view', $occ, 'c' || :client_id FROM generate_series((:i - 1) * $per_batch + 1, (:i - 1) * $per_batch + 2) g ORDER BY g;
INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
SELECT $id, 'page_view', $occ, 'c' || :client_id FROM generate_series((:i - 1) * $per_batch + 3, :i * $per_batch) g ORDER BY g;
},
	# stream.ingest with a JSON batch
	'003_ingest@1' => qq{
\\set i :i + 1
SELECT * FROM stream.ingest('clicks',
  (SELECT jsonb_agg(jsonb_build_object('event_id', $id, 'event_name', 'page_view',
                                       'occurred_at', $occ, 'user_id', 'c' || :client_id)
                    ORDER BY g)
   FROM $range));
},
);

$node->pgbench(
	"--no-vacuum --client=$clients --jobs=$clients --transactions=$batches -D i=0",
	0,
	[
		qr{number of transactions actually processed: $xacts/$xacts},
		qr{number of failed transactions: 0 }
	],
	[qr{^$}],
	"$clients concurrent producers send $ids event ids $clients times each",
	\%scripts);

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) || '/' || count(DISTINCT event_id) FROM clicks}),
	"$ids/$ids",
	'each event_id is stored exactly once');
is( $node->safe_psql(
		'postgres',
		qq{SELECT count(*) FROM generate_series(1, $ids) g
		   WHERE NOT EXISTS (SELECT 1 FROM clicks c WHERE c.event_id = md5('ev' || g)::uuid)}),
	'0',
	'no event is lost');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM clicks WHERE event_name <> 'page_view'}),
	'0',
	'no event of a rolled-back attempt is stored');
is( $node->safe_psql(
		'postgres',
		q{SELECT events || '/' || duplicates FROM stream.stats WHERE stream = 'clicks'}),
	"$ids/" . ($attempts - $ids),
	'stream.stats: events + duplicates = attempts, rolled-back attempts not counted');
is( $node->safe_psql(
		'postgres',
		q{SELECT (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM stream.%I', 'dedup_keys_' || s.stream_id), false, true, '')))[1]::text
		  FROM stream.streams s WHERE s.relid = 'clicks'::regclass}),
	$ids,
	'one dedup key per stored event');

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) || '/' ||
		         count(*) FILTER (WHERE tableoid::regclass::text LIKE 'clicks_p200101%') || '/' ||
		         count(*) FILTER (WHERE tableoid = 'clicks_default'::regclass)
		  FROM clicks WHERE occurred_at < '2002-01-01'}),
	($ids / 10) . '/' . ($ids / 10) . '/0',
	'the 2001 events are in their partitions, none in the default partition');

# a last round of retries from one session: all dropped
is( $node->safe_psql(
		'postgres', qq{
	WITH ins AS (
	    INSERT INTO clicks (event_id, event_name, occurred_at)
	    SELECT $id, 'page_view', $occ FROM generate_series(1, $ids) g
	    RETURNING 1)
	SELECT count(*) FROM ins}),
	'0',
	'a retry of every event afterwards is dropped');
is( $node->safe_psql(
		'postgres',
		q{SELECT events || '/' || duplicates FROM stream.stats WHERE stream = 'clicks'}),
	"$ids/" . ($attempts - $ids + $ids),
	'stream.stats counts those retries');

############################################################################
# A partition adopted while producers send events of its range.
#
# s1 stands for the worker: in one transaction it stores a late event X (its
# day has no partition, so X lands in the default partition) and runs
# stream.maintain(), which creates the partition of that day, moves X into it
# and attaches it (holding the default partition until commit).  Meanwhile s2
# sends a new event Y of the same day and s3 retries X.  Both wait for s1.
# After s1 commits, Y must be stored in the new partition and the retry of X
# dropped as a duplicate: "an insert never fails because a partition is
# missing".  The worker cannot adopt X itself first: X is not committed.

# an interactive psql session
sub session
{
	my ($name) = @_;
	my $s = { name => $name, in => '', out => '', err => '' };
	$s->{timer} = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
	$s->{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', '-' ],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err}, $s->{timer});
	return $s;
}

# sends SQL, then waits until the session has run it
my $marks = 0;
sub run_in
{
	my ($s, $sql) = @_;
	my $mark = 'done-' . ++$marks;
	$s->{in} .= "$sql\n\\echo $mark\n";
	$s->{h}->pump until $s->{out} =~ /\Q$mark\E/ || $s->{timer}->is_expired;
	return $s->{out} =~ /\Q$mark\E/;
}

# sends SQL without waiting for it
sub send_to
{
	my ($s, $sql) = @_;
	$s->{in} .= "$sql\n";
	$s->{h}->pump_nb;
}

$node->safe_psql('postgres', q{SELECT stream.create_stream('late')});
my $x = q{'00000000-0000-7000-8000-00000000000a'::uuid};
my $y = q{'00000000-0000-7000-8000-00000000000b'::uuid};

my ($s1, $s2, $s3) = (session('s1'), session('s2'), session('s3'));
ok(run_in($s1, q{BEGIN;
INSERT INTO late (event_id, event_name, occurred_at) VALUES
  ('00000000-0000-7000-8000-00000000000a', 'purchase', '2003-02-03 10:00+00');
SELECT 'moved=' || rows_moved FROM stream.maintain('late');}),
	's1 stores X and adopts its day in one open transaction');
like($s1->{out}, qr/moved=1/, 's1 moved X into the partition of its day');

for my $s ($s2, $s3)
{
	$s->{out} = '';
	run_in($s, 'SELECT pg_backend_pid();');
	($s->{pid}) = $s->{out} =~ /^(\d+)/m;
}
send_to($s2, qq{WITH ins AS (INSERT INTO late (event_id, event_name, occurred_at)
  VALUES ($y, 'purchase', '2003-02-03 11:00+00') RETURNING 1)
SELECT 's2 rows=' || count(*) FROM ins;
\\echo s2-finished});
send_to($s3, qq{WITH ins AS (INSERT INTO late (event_id, event_name, occurred_at)
  VALUES ($x, 'purchase', '2003-02-03 10:00+00') RETURNING 1)
SELECT 's3 rows=' || count(*) FROM ins;
\\echo s3-finished});
ok( $node->poll_query_until(
		'postgres',
		qq{SELECT count(*) = 2 FROM pg_stat_activity
		   WHERE pid IN ($s2->{pid}, $s3->{pid}) AND wait_event_type = 'Lock'}),
	's2 (new event of that day) and s3 (retry of X) wait for s1');

ok(run_in($s1, 'COMMIT;'), 's1 commits');
for my $s ($s2, $s3)
{
	$s->{h}->pump
	  until $s->{out} =~ /$s->{name}-finished/ || $s->{timer}->is_expired;
}
{
	# Partition creation waits for in-flight producers (LOCK ... SHARE) before
	# it attaches, so no producer routes a row by stale partitions.
	is($s2->{err}, '', 's2 gets no error') or diag($s2->{err});
	like($s2->{out}, qr/s2 rows=1/, 'the new event of the adopted day is stored');
	is($s3->{err}, '', 's3 gets no error') or diag($s3->{err});
	like($s3->{out}, qr/s3 rows=0/, 'the retry of X is dropped as a duplicate');
	is( $node->safe_psql(
			'postgres', 'SELECT count(*) FROM late'),
		'2',
		'X once and Y are stored');
}
is( $node->safe_psql(
		'postgres',
		qq{SELECT count(*) FROM late WHERE event_id = $x
		     AND tableoid::regclass::text = 'late_p20030203'}),
	'1',
	'X is stored once, in the partition of its day');
for my $s ($s1, $s2, $s3)
{
	$s->{in} .= "\\q\n";
	$s->{h}->finish;
}

unlike(slurp_file($node->logfile),
	qr/deadlock detected|PANIC|TRAP:|server process .* was terminated/,
	'no deadlock or crash in the server log');

$node->stop;
done_testing();
