# The batched COPY into a stream (src/stream/copy.c) against the oracle:
# concurrent COPYs with retries inside and across them, late events (the
# default partition), rolled-back COPYs (whole transaction and savepoint),
# quarantined events, then crashes (pg_ctl -m immediate) while COPYs run
# and while the worker applies them.  After stream.flush every aggregate
# equals its defining query, every event_id is stored exactly once, and
# the stream holds what the same COPYs store with PostgreSQL's row-by-row
# COPY (stream_events.copy_batch = off) into a second stream.
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
use Time::HiRes qw(usleep);

my $node = StreamEventsTest::new_node('copy_batched', q{max_connections = 30});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION stream_events');
$node->safe_psql('postgres', q{
SELECT stream.create_stream('clicks', partition_interval => '1 day');
SELECT stream.create_stream('clicks_rows', partition_interval => '1 day');
SELECT stream.define_contract(s, 'buy',
  '{"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}')
FROM unnest(ARRAY['clicks', 'clicks_rows']::regclass[]) s;
SELECT stream.set_policy(s, on_violation => 'quarantine')
FROM unnest(ARRAY['clicks', 'clicks_rows']::regclass[]) s;
});

my %query = (
	per_minute => q{
SELECT stream.tumble(occurred_at, '1 minute') AS minute, event_name,
       count(*) AS events, sum((properties->>'price')::numeric) AS revenue,
       count(user_id) AS known, max(occurred_at) AS last_seen
FROM clicks GROUP BY 1, 2},
	hop_user => q{
SELECT w.window_start, user_id, count(*) AS events
FROM clicks CROSS JOIN LATERAL stream.hop(occurred_at, '10 minutes', '1 minute') AS w(window_start)
GROUP BY 1, 2});
for my $name (sort keys %query)
{
	$node->safe_psql('postgres',
		"SELECT stream.create_aggregate('$name', \$q\$ $query{$name} \$q\$)");
}

# Both directions in one REPEATABLE READ transaction, so that they compare
# the same events while producers and maintenance go on.
sub oracle_equal
{
	my ($what) = @_;
	$node->safe_psql('postgres', q{SELECT stream.flush(timeout => '300 s')});
	for my $name (sort keys %query)
	{
		my $q = $query{$name};
		my $diff = $node->safe_psql('postgres', qq{
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT (SELECT count(*) FROM (($q) EXCEPT ALL TABLE $name) d) || '/' ||
       (SELECT count(*) FROM (TABLE $name EXCEPT ALL ($q)) d);
COMMIT;});
		is($diff, '0/0', "$what: $name equals its defining query")
		  or diag($node->safe_psql('postgres', qq{
SELECT 'extra', * FROM (TABLE $name EXCEPT ALL ($q)) d LIMIT 10;
SELECT 'missing', * FROM (($q) EXCEPT ALL TABLE $name) d LIMIT 10;
SELECT name, state, last_error FROM stream.aggregates}));
	}
	is( $node->safe_psql('postgres',
			q{SELECT count(*) FROM (SELECT event_id FROM clicks GROUP BY 1 HAVING count(*) > 1) d}),
		'0', "$what: every event_id stored once");
}

# A file of $n events: ids drawn from a pool of $pool (so retries within the
# file and across files), times over the last six days (the older half
# late: the default partition), one buy in 13 without a price
# (quarantined).  An id's event is the same in every file, times relative
# to when the test started (COPY takes no expressions: the server turns
# the ages into times, COPY ... TO).
my $seq = 0;
my $base = $node->safe_psql('postgres', 'SELECT now()');
sub event_file
{
	my ($n, $pool) = @_;
	my $file = $node->basedir . '/events_' . ++$seq . '.tsv';
	open my $fh, '>', "$file.ages" or die;
	for my $i (1 .. $n)
	{
		my $k = int(rand($pool));
		my $name = (qw(view cart buy))[$k % 3];
		my $props = $name eq 'buy' && $k % 13 == 0 ? '{}' :
		  sprintf('{"price": %d.%02d}', $k % 500, $k % 100);
		printf $fh "%08x-0000-4000-8000-%012x\t%s\tu%d\t%s\t%d\n",
		  $k, $k, $name, $k % 37, $props, ($k * 7919) % (6 * 86400);
	}
	close $fh;
	$node->safe_psql('postgres', qq{
CREATE TEMP TABLE staging (id uuid, name text, uid text, props jsonb, age int);
COPY staging FROM '$file.ages';
COPY (SELECT id, name, uid, props, '$base'::timestamptz - age * interval '1 second' FROM staging) TO '$file';
});
	return $file;
}

sub copy_sql
{
	my ($stream, $file) = @_;
	return "COPY $stream (event_id, event_name, user_id, properties, occurred_at) FROM '$file'";
}

sub stored
{
	return $node->safe_psql('postgres',
		'BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM clicks; COMMIT;');
}

# 1. four concurrent COPYs of overlapping events, each also sent row by row
my @files = map { event_file(3000, 5000) } 1 .. 4;
my @h;
for my $f (@files)
{
	push @h, IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		  '-c', copy_sql('clicks', $f) ], '>', \my $o, '2>', \my $e);
}
$_->finish for @h;
for my $f (@files)
{
	$node->safe_psql('postgres',
		"SET stream_events.copy_batch = off; " . copy_sql('clicks_rows', $f));
}
oracle_equal('concurrent COPYs');
is( $node->safe_psql('postgres', q{
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM ((SELECT event_id, event_name, user_id, properties, occurred_at FROM clicks
                       EXCEPT ALL
                       SELECT event_id, event_name, user_id, properties, occurred_at FROM clicks_rows)
                      UNION ALL
                      (SELECT event_id, event_name, user_id, properties, occurred_at FROM clicks_rows
                       EXCEPT ALL
                       SELECT event_id, event_name, user_id, properties, occurred_at FROM clicks)) d;
COMMIT;}),
	'0', 'batched and row-by-row COPY store the same events');
is( $node->safe_psql('postgres',
		q{SELECT (SELECT count(*) FROM clicks_quarantine) = (SELECT count(*) FROM clicks_rows_quarantine)
		     AND (SELECT count(*) FROM clicks_quarantine) > 0}),
	't', 'and quarantine the same events');
ok( $node->safe_psql('postgres',
		q{BEGIN ISOLATION LEVEL REPEATABLE READ;
		  SELECT count(*) FROM clicks WHERE occurred_at < now() - interval '4 days';
		  COMMIT;}) > 0,
	'late events are stored (the default partition, then moved by maintenance)');

# 2. rolled back: a whole transaction, and a savepoint; the keys are free
# again, so the same file is stored when sent again
my $f5 = event_file(2000, 100000);
my $before = stored();
$node->safe_psql('postgres', "BEGIN; " . copy_sql('clicks', $f5) . "; ROLLBACK;");
$node->safe_psql('postgres',
	"BEGIN; SAVEPOINT s; " . copy_sql('clicks', $f5) . "; ROLLBACK TO s; "
	  . "INSERT INTO clicks (event_name, user_id) VALUES ('view', 'after_savepoint'); COMMIT;");
is(stored(), $before + 1, 'rolled-back COPYs store nothing');
oracle_equal('rolled-back COPYs');
$node->safe_psql('postgres', copy_sql('clicks', $f5));
ok(stored() > $before + 1000, 'events of rolled-back COPYs are stored when sent again');
oracle_equal('after resending');

# 3. crashes while COPYs run and while the worker applies them
for my $round (1 .. 2)
{
	my $f = event_file(25000, 1000000);
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', copy_sql('clicks', $f) ],
		'>', \my $o, '2>', \my $e);
	usleep(200_000 + int(rand(1_500_000)));
	$node->stop('immediate');
	$h->finish;
	$node->start;
	oracle_equal("after immediate stop $round");
}
my $f9 = event_file(20000, 1000000);
$node->safe_psql('postgres', copy_sql('clicks', $f9));
$node->stop('immediate');
$node->start;
oracle_equal('after immediate stop right after a COPY committed');

# 4. A COPY meets an event another producer holds uncommitted.  It waits
# for that producer, then drops its copy if the producer committed, stores
# it if it rolled back; the keys are one per stored event either way.  Two
# paths: a COPY whose first batch is all retries (events stored before),
# so the next batches look each key up before inserting it, meets the held
# event in such a batch; a COPY of new events inserts its keys first and
# meets the held one as a conflict of the index insertion.
my $round = 0;
my $clicks_sid = $node->safe_psql('postgres',
	q{SELECT stream_id FROM stream.streams WHERE relid = 'clicks'::regclass});
for my $case ([ 'lookup', 'COMMIT' ], [ 'lookup', 'ROLLBACK' ],
	[ 'insert', 'COMMIT' ], [ 'insert', 'ROLLBACK' ])
{
	my ($path, $end) = @$case;
	my $what = "held event, $path path, $end";
	$round++;
	my $prefix = sprintf('%08x', 0xfe000000 + $round);
	my $id = sub { sprintf('%s-0000-4000-8000-%012x', $prefix, $_[0]) };
	my $held = $id->(1500);
	my $write = sub {
		my ($name, @ids) = @_;
		my $file = $node->basedir . "/held_${round}_$name.tsv";
		open my $fh, '>', $file or die;
		print $fh $id->($_) . "\tview\tu1\t{}\t$base\n" for @ids;
		close $fh;
		return $file;
	};
	# lookup: 1..1000 stored first, then 1..2000 sent; insert: 1001..2000 sent
	$node->safe_psql('postgres', copy_sql('clicks', $write->('first', 1 .. 1000)));
	my $file = $write->('sent', $path eq 'lookup' ? (1 .. 2000) : (1001 .. 2000));
	my $n0 = stored();

	my $bg = $node->background_psql('postgres');
	$bg->query_safe('BEGIN');
	$bg->query_safe(qq{INSERT INTO clicks (event_id, event_name) VALUES ('$held', 'held')});
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', copy_sql('clicks', $file) ],
		'>', \$out, '2>', \$err);
	is( StreamEventsTest::poll_until($node, 'postgres',
			q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY clicks%' AND wait_event_type = 'Lock'},
			'1', 60),
		'1', "$what: the COPY waits for the producer");
	$bg->query_safe($end);
	$bg->quit;
	$h->finish;
	is($err, '', "$what: the COPY succeeds");
	is(stored() - $n0, 1000, "$what: 1000 new events stored once each");
	is( $node->safe_psql('postgres', qq{SELECT event_name FROM clicks WHERE event_id = '$held'}),
		$end eq 'COMMIT' ? 'held' : 'view',
		"$what: " . ($end eq 'COMMIT' ? "the COPY's copy dropped" : 'the COPY stored it'));
	is( $node->safe_psql('postgres',
			qq{SELECT count(*) FROM stream.dedup_keys_$clicks_sid WHERE event_id::text LIKE '$prefix%'}),
		'2000', "$what: one key per stored event");
}
oracle_equal('after the held events');

done_testing();
