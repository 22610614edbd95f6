# Queue mode's edges (docs/queue-mode.md): transactions that span many
# windows, prepared transactions (committed and rolled back), events that
# maintenance would move out of the default partition before the worker
# read them, and the queue's own tables staying small.  After each, the
# aggregate equals its defining query and the activation fired once per
# matching event.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;

local $ENV{STREAM_EVENTS_TEST_MODE} = 'queue';
my $node = StreamEventsTest::new_node('queue_edges', q{max_prepared_transactions = 5},
	q{stream_events.naptime = 3600});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $query = q{SELECT user_id, count(*) AS n, sum((properties->>'v')::int) AS total
FROM clicks GROUP BY user_id};

sub check
{
	my ($label) = @_;
	sql(q{SELECT stream.flush(timeout => '60 s')});
	is(sql(qq{SELECT (SELECT count(*) FROM (TABLE per_user EXCEPT ALL ($query)) a) || '/' ||
	                 (SELECT count(*) FROM (($query) EXCEPT ALL TABLE per_user) b)}),
		'0/0', "$label: per_user equals its defining query");
	is(sql(q{SELECT (SELECT count(*) FROM stream.activations WHERE activation = 'hits') || '/' ||
	                (SELECT count(DISTINCT event_id) FROM stream.activations WHERE activation = 'hits') || '/' ||
	                (SELECT count(*) FROM clicks WHERE event_name = 'hit')}),
		sql(q{SELECT count(*) || '/' || count(*) || '/' || count(*) FROM clicks WHERE event_name = 'hit'}),
		"$label: the activation fired once per matching event");
}

sql('CREATE EXTENSION stream_events');
is(sql('SELECT stream.consumer_mode()'), 'queue', 'queue mode');
sql(q{SELECT stream.create_stream('clicks')});
sql(qq{SELECT stream.create_aggregate('per_user', \$q\$ $query \$q\$)});
sql(q{SELECT stream.on_event('hits', 'clicks', $$event_name = 'hit'$$, channel => 'hits')});
sql(q{SELECT stream.flush(timeout => '60 s')});

# ---- a transaction open across many windows ---------------------------------
my $long = $node->background_psql('postgres');
$long->query_safe(q{BEGIN});
$long->query_safe(q{INSERT INTO clicks (event_name, user_id, properties) VALUES ('hit', 'long', '{"v": 1}')});
for my $i (1 .. 5)
{
	sql(qq{INSERT INTO clicks (event_name, user_id, properties)
	       SELECT 'hit', 'u' || g, '{"v": $i}' FROM generate_series(1, 20) g});
	sql(q{SELECT stream.flush(timeout => '60 s')});
}
is(sql(q{SELECT count(*) FROM per_user WHERE user_id = 'long'}), '0',
	'an open transaction is not read');
$long->query_safe(q{SAVEPOINT s});
$long->query_safe(q{INSERT INTO clicks (event_name, user_id, properties) VALUES ('hit', 'long', '{"v": 2}')});
$long->query_safe(q{RELEASE s});
$long->query_safe(q{COMMIT});
$long->quit;
check('a transaction open across five windows');
is(sql(q{SELECT n || ':' || total FROM per_user WHERE user_id = 'long'}), '2:3',
	'its events (one under a savepoint) were read once, when it committed');

# ---- prepared transactions ------------------------------------------------
sql(q{BEGIN; INSERT INTO clicks (event_name, user_id, properties) VALUES ('hit', 'prep_ok', '{"v": 5}');
      PREPARE TRANSACTION 'p_ok'});
sql(q{BEGIN; INSERT INTO clicks (event_name, user_id, properties) VALUES ('hit', 'prep_no', '{"v": 7}');
      PREPARE TRANSACTION 'p_no'});
sql(q{INSERT INTO clicks (event_name, user_id, properties) VALUES ('hit', 'between', '{"v": 1}')});
sql(q{SELECT stream.flush(timeout => '60 s')});
is(sql(q{SELECT count(*) FROM per_user WHERE user_id LIKE 'prep%'}), '0',
	'prepared transactions are not read before they commit');
sql(q{COMMIT PREPARED 'p_ok'});
sql(q{ROLLBACK PREPARED 'p_no'});
check('prepared transactions');
is(sql(q{SELECT string_agg(user_id, ',') FROM per_user WHERE user_id LIKE 'prep%'}), 'prep_ok',
	'the committed prepared transaction was read, the rolled-back one not');

# ---- maintenance does not move rows the worker has not read ----------------
# the worker is stopped (naptime 3600: the launcher does not restart it)
my $worker = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'stream_events worker'
                   AND datname = current_database()});
ok($worker, 'the database has a worker');
sql("SELECT pg_terminate_backend($worker)");
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'stream_events worker'}),
	'the worker stopped');
# 20 days old: the default partition (3 partitions are kept behind)
sql(q{INSERT INTO clicks (event_name, user_id, occurred_at, properties)
      SELECT 'hit', 'old' || g, now() - interval '20 days', '{"v": 4}' FROM generate_series(1, 30) g});
is(sql(q{SELECT count(*) FROM clicks_default}), '30', 'the old events are in the default partition');
sql(q{SELECT stream.maintain()});
is(sql(q{SELECT count(*) FROM clicks_default}), '30',
	'maintenance left them there: the worker has not read them yet');
sql(q{SELECT stream._extension_created()});
check('events maintenance did not move');
# once read and released (a second or so), maintenance moves them
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM stream.queue_txns WHERE stream = 'clicks'::regclass
		  AND subxid IN (SELECT xmin FROM clicks_default)}),
	'their queue rows are released once read');
sql(q{SELECT stream.maintain()});
is(sql(q{SELECT count(*) FROM clicks_default}), '0', 'then maintenance moved them');
check('after the move');

# ---- the queue stays small ------------------------------------------------
sql(q{INSERT INTO clicks (event_name, user_id, properties) SELECT 'x', 'tail', '{"v": 1}'});
sql(q{SELECT stream.flush(timeout => '60 s')});
ok($node->poll_query_until('postgres',
		q{SELECT (SELECT count(*) FROM stream.queue_txns) <= 1 AND (SELECT count(*) FROM stream.queue_ticks) <= 3}),
	'read transactions and old ticks are released');

$node->stop;
done_testing();
