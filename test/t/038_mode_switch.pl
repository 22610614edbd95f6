# Moving a database between the consumer's two sources (docs/queue-mode.md,
# "Changing the mode"): logical decoding -> the ingest queue (the setting,
# then a restart with wal_level = replica) -> logical decoding again (a
# restart with wal_level = logical).  After each move every aggregate
# equals its defining query (it is rebuilt from its stream), the activation
# fires nothing twice (one row per event at most, none for events before
# its start) and goes on firing for new events; the replication slot exists
# only in logical mode.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;

# always starts in logical mode, whatever STREAM_EVENTS_TEST_MODE says
local $ENV{STREAM_EVENTS_TEST_MODE} = 'logical';
my $node = StreamEventsTest::new_node('mode_switch');
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $query = q{SELECT event_name, user_id, count(*) AS n, sum((properties->>'price')::int) AS total
FROM clicks GROUP BY event_name, user_id};

sub oracle_diff
{
	return sql(qq{SELECT (SELECT count(*) FROM (SELECT * FROM per_user EXCEPT $query) a) || '/' ||
	                     (SELECT count(*) FROM ($query EXCEPT SELECT * FROM per_user) b)});
}

my $batch = 0;
# events from several transactions, one rolled back, one with a savepoint
sub insert_events
{
	$batch++;
	sql(qq{INSERT INTO clicks (event_name, user_id, properties)
	       SELECT CASE WHEN g % 4 = 0 THEN 'buy' ELSE 'view' END, 'u' || (g % 9),
	              jsonb_build_object('price', g % 40, 'batch', $batch)
	       FROM generate_series(1, 400) g});
	sql(qq{BEGIN;
	       INSERT INTO clicks (event_name, user_id, properties) VALUES ('buy', 'sp', '{"price": 1, "batch": $batch}');
	       SAVEPOINT s;
	       INSERT INTO clicks (event_name, user_id, properties) VALUES ('buy', 'sp', '{"price": 2, "batch": $batch}');
	       RELEASE s;
	       COMMIT});
	sql(qq{BEGIN;
	       INSERT INTO clicks (event_name, user_id, properties) VALUES ('buy', 'gone', '{"price": 3, "batch": $batch}');
	       ROLLBACK});
}

# no event fired twice, none before the activation's start; returns the
# number of firings
sub check_firings
{
	my ($label) = @_;
	is(sql(q{SELECT count(*) FROM (SELECT event_id FROM stream.activations WHERE activation = 'buys'
	                               GROUP BY event_id HAVING count(*) > 1) d}),
		'0', "$label: no event fired twice");
	is(sql(q{SELECT count(*) FROM stream.activations a JOIN clicks c USING (event_id)
	         WHERE a.activation = 'buys' AND c.event_name <> 'buy'}),
		'0', "$label: only matching events fired");
	is(sql(q{SELECT count(*) FROM stream.activations a WHERE a.activation = 'buys'
	         AND NOT EXISTS (SELECT 1 FROM clicks c WHERE c.event_id = a.event_id)}),
		'0', "$label: no firing for a rolled-back event");
	return sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'buys'});
}

sub slots
{
	return sql(q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'stream_events_%'});
}

sql('CREATE EXTENSION stream_events');
sql(q{SELECT stream.create_stream('clicks')});
insert_events();
sql(qq{SELECT stream.create_aggregate('per_user', \$q\$ $query \$q\$)});
sql(q{SELECT stream.on_event('buys', 'clicks', $$event_name = 'buy'$$, channel => 'buys')});
sql(q{SELECT stream.flush(timeout => '60 s')});
insert_events();
sql(q{SELECT stream.flush(timeout => '60 s')});

# ---- logical ---------------------------------------------------------------
is(sql('SELECT stream.consumer_mode()'), 'logical', 'starts in logical mode');
is(slots(), '1', 'logical mode: one slot');
is(oracle_diff(), '0/0', 'logical: per_user equals its defining query');
my $fired = check_firings('logical');
is($fired, sql(q{SELECT count(*) FROM clicks WHERE event_name = 'buy' AND (properties->>'batch')::int = 2}),
	'logical: the activation fired for every buy after its start');

# ---- -> queue: the setting first (the worker drops its slot, which a server
# ---- at wal_level = replica refuses to start with), then the restart
sql(q{ALTER SYSTEM SET stream_events.consumer = 'queue'});
sql('SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'stream_events_%'}),
	'the worker dropped its slot when the setting changed');
sql(q{SELECT stream.flush(timeout => '60 s')});
is(sql(q{SELECT string_agg(state, ',') FROM stream.aggregates}), 'running', 'per_user rebuilt and running');
is(oracle_diff(), '0/0', 'queue (setting): per_user equals its defining query after its rebuild');
$node->append_conf('postgresql.conf', "wal_level = replica\n");
$node->restart;
is(sql('SELECT stream.consumer_mode()'), 'queue', 'wal_level = replica: queue mode');
insert_events();
sql(q{SELECT stream.flush(timeout => '60 s')});
is(oracle_diff(), '0/0', 'queue: per_user equals its defining query');
is(slots(), '0', 'queue mode: no slot');
my $fired_q = check_firings('queue');
cmp_ok($fired_q, '>', $fired, 'queue: the activation fires for new events');
is($fired_q - $fired,
	sql(q{SELECT count(*) FROM clicks WHERE event_name = 'buy' AND (properties->>'batch')::int = 3}),
	'queue: once for every buy after the move');

# ---- -> logical: a restart with wal_level = logical ('auto' again) ------------
sql(q{ALTER SYSTEM RESET stream_events.consumer});
$node->append_conf('postgresql.conf', "wal_level = logical\n");
$node->restart;
is(sql('SELECT stream.consumer_mode()'), 'logical', 'wal_level = logical: logical mode again');
sql(q{SELECT stream.flush(timeout => '60 s')});
insert_events();
sql(q{SELECT stream.flush(timeout => '60 s')});
is(oracle_diff(), '0/0', 'logical again: per_user equals its defining query');
is(slots(), '1', 'logical again: the slot is back');
my $fired_l = check_firings('logical again');
is($fired_l - $fired_q,
	sql(q{SELECT count(*) FROM clicks WHERE event_name = 'buy' AND (properties->>'batch')::int = 4}),
	'logical again: once for every buy after the move');

$node->stop;
done_testing();
