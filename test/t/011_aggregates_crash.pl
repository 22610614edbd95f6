# Exactly once across crashes: the server is stopped with pg_ctl -m immediate
# while producers ingest and the worker decodes and applies, several times;
# after restart and stream.flush the aggregate still equals its defining
# query.  Also: drop and recreate, a backfill of 200k events, two databases
# (one slot each, DROP DATABASE releases its slot).
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

my $node = StreamEventsTest::new_node('agg_crash', q{max_connections = 30}, q{stream_events.aggregate_batch_groups = 200});
$node->start;

my $query = q{
SELECT stream.tumble(occurred_at, '1 minute') AS minute, event_name,
       count(*) AS events, sum((properties->>'price')::numeric) AS revenue,
       avg((properties->>'qty')::int) AS avg_qty, min(user_id) AS first_user,
       max(occurred_at) AS last_seen, count(user_id) AS known
FROM clicks GROUP BY 1, 2};

sub setup_db
{
	my ($db) = @_;
	$node->safe_psql($db, 'CREATE EXTENSION stream_events');
	$node->safe_psql($db, q{SELECT stream.create_stream('clicks')});
	$node->safe_psql($db,
		"SELECT stream.create_aggregate('per_minute', \$q\$ $query \$q\$)");
}

sub oracle_equal
{
	my ($db, $agg, $q, $what) = @_;
	$node->safe_psql($db, q{SELECT stream.flush(timeout => '300 s')});
	my $missing = $node->safe_psql($db,
		"SELECT count(*) FROM (($q) EXCEPT ALL TABLE $agg) d");
	my $extra = $node->safe_psql($db,
		"SELECT count(*) FROM (TABLE $agg EXCEPT ALL ($q)) d");
	my $events = $node->safe_psql($db, "SELECT coalesce(sum(events), 0) FROM $agg");
	is("$missing/$extra", '0/0', "$what: $agg equals its defining query ($events events)");
}

my $script = $node->basedir . '/crash_events.sql';
open my $fh, '>', $script or die;
print $fh q{
\set r random(1, 1000000000)
\set off random(-10800, 60)
BEGIN;
INSERT INTO clicks (event_name, occurred_at, user_id, properties)
SELECT (ARRAY['view','cart','buy'])[1 + (:r + g) % 3],
       now() + ((:off - g * 7) || ' seconds')::interval,
       CASE WHEN (:r + g) % 5 = 0 THEN NULL ELSE 'u' || ((:r + g) % 31) END,
       jsonb_build_object('price', round(((:r + g) % 10000) / 100.0, 2), 'qty', (:r + g) % 9)
FROM generate_series(1, 1 + :r % 20) g;
\if :r % 8 = 0
ROLLBACK;
\else
COMMIT;
\endif
};
close $fh;

setup_db('postgres');

# crashes while producers run and the worker applies
for my $round (1 .. 4)
{
	my ($out, $err);
	my $h = IPC::Run::start(
		[
			'pgbench', '--no-vacuum', '--client=4', '--jobs=4', '--time=20',
			'--file=' . $script, '--host=' . $node->host,
			'--port=' . $node->port, 'postgres'
		],
		'>', \$out, '2>', \$err);
	usleep(700_000 + int(rand(1_500_000)));
	$node->stop('immediate');
	$h->finish;    # the producers lose their connections: expected
	$node->start;
	oracle_equal('postgres', 'per_minute', $query, "after immediate stop $round");
}

# a crash while the worker applies a large backlog
$node->safe_psql('postgres',
	q{INSERT INTO clicks (event_name, occurred_at, user_id, properties)
	  SELECT 'view', now() - (g || ' seconds')::interval, 'u' || (g % 97),
	         jsonb_build_object('price', g % 1000, 'qty', g % 9)
	  FROM generate_series(1, 50000) g});
usleep(300_000);
$node->stop('immediate');
$node->start;
oracle_equal('postgres', 'per_minute', $query, 'after immediate stop during a backlog');

# drop and recreate
$node->safe_psql('postgres', q{SELECT stream.drop_aggregate('per_minute')});
$node->safe_psql('postgres',
	"SELECT stream.create_aggregate('per_minute', \$q\$ $query \$q\$)");
oracle_equal('postgres', 'per_minute', $query, 'after drop and recreate');

# backfill of 200k events
$node->safe_psql('postgres', q{SELECT stream.create_stream('big')});
$node->safe_psql('postgres',
	q{INSERT INTO big (event_name, occurred_at, user_id, properties)
	  SELECT (ARRAY['a','b','c','d'])[1 + g % 4], now() - (g || ' seconds')::interval,
	         'u' || (g % 1000), jsonb_build_object('price', g % 500)
	  FROM generate_series(1, 200000) g});
my $big = q{SELECT stream.tumble(occurred_at, '1 hour') AS hour, event_name,
       count(*) AS events, sum((properties->>'price')::numeric) AS revenue,
       max(user_id) AS last_user FROM big GROUP BY 1, 2};
$node->safe_psql('postgres', "SELECT stream.create_aggregate('big_hourly', \$q\$ $big \$q\$)");
oracle_equal('postgres', 'big_hourly', $big, 'backfill of 200k events');
is($node->safe_psql('postgres',
		q{SELECT events_backfilled FROM stream.aggregates WHERE name = 'big_hourly'}),
	'200000', 'the backfill read 200k events');

# two databases: a slot each, events of one never reach the other
$node->safe_psql('postgres', 'CREATE DATABASE two');
setup_db('two');
$node->safe_psql('two',
	q{INSERT INTO clicks (event_name, occurred_at, user_id, properties)
	  SELECT 'buy', now() - (g || ' minutes')::interval, 'x' || g, '{"price": 1}'
	  FROM generate_series(1, 500) g});
oracle_equal('two', 'per_minute', $query, 'second database');
oracle_equal('postgres', 'per_minute', $query, 'first database unaffected');
# a slot per database in logical mode; none at all in queue mode
my $queue = StreamEventsTest::queue_mode();
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'stream_events_%'}),
	$queue ? '0' : '2', 'one replication slot per database (none in queue mode)');
$node->safe_psql('postgres', 'DROP DATABASE two');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'stream_events_%'}),
	$queue ? '0' : '1', 'DROP DATABASE released its slot');

# DROP EXTENSION releases the slot
$node->safe_psql('postgres', 'DROP EXTENSION stream_events CASCADE');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'stream_events_%'}),
	'DROP EXTENSION released the slot');

$node->stop;
done_testing();
