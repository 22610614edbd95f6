# Large transactions streamed to the worker before their commit
# (src/consumer/streamed.c), logical mode only: with logical_decoding_work_mem
# at 64kB every transaction of more than a few hundred events streams.
# Checked against the aggregate's oracle (its defining query on the raw
# events) and the on_event activation's firings (one per committed event, in
# the events' order):
# - a large INSERT decoded live, and as a backlog (the worker stopped while it
#   commits), with the slot's statistics showing that it was streamed;
# - a transaction whose subtransactions roll back after their rows were
#   streamed (ROLLBACK TO SAVEPOINT, and a nested one), and one that aborts
#   whole: their rows never reach the aggregate or the outbox;
# - two large transactions interleaved, committing in the other order, with
#   a definition changed while both are open (the worker drops what it kept
#   and decodes them again);
# - a crash (pg_ctl -m immediate) with a streamed transaction still open,
#   another committed behind it in the backlog;
# - poison events inside a streamed transaction become dead letters of the
#   aggregate that fails on them, the rest is applied;
# - stream_events.decode_streaming = off gives the same results unstreamed.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = StreamEventsTest::new_node('streamed', q{logical_decoding_work_mem = 64kB},
	q{max_connections = 30});
$node->start;

sub sql { return $node->safe_psql('postgres', @_); }

my $query = q{
SELECT stream.tumble(occurred_at, '1 minute') AS minute, event_name,
       count(*) AS events, sum((properties->>'price')::numeric) AS revenue,
       max(user_id) AS last_user, count(user_id) AS known
FROM clicks GROUP BY 1, 2};

sql('CREATE EXTENSION stream_events');
sql(q{SELECT stream.create_stream('clicks')});
sql("SELECT stream.create_aggregate('per_minute', \$q\$ $query \$q\$)");
sql(q{SELECT stream.on_event('every_event', 'clicks', 'true')});
sql(q{SELECT stream.flush(timeout => '60 s')});

my $seq = 0;

# n events, each with a distinct seq, as one INSERT statement
sub events_sql
{
	my ($n, $name) = @_;
	my $from = $seq + 1;
	$seq += $n;
	return qq{INSERT INTO clicks (event_name, occurred_at, user_id, properties)
	  SELECT '$name', now() - ((g % 5000) || ' seconds')::interval,
	         CASE WHEN g % 7 = 0 THEN NULL ELSE 'u' || (g % 113) END,
	         jsonb_build_object('price', g % 1000, 'seq', g)
	  FROM generate_series($from, $seq) g;};
}

# the aggregate equals its query; every committed event fired once, in order
sub check_all
{
	my ($what) = @_;
	sql(q{SELECT stream.flush(timeout => '300 s')});
	my $missing = sql("SELECT count(*) FROM (($query) EXCEPT ALL TABLE per_minute) d");
	my $extra = sql("SELECT count(*) FROM (TABLE per_minute EXCEPT ALL ($query)) d");
	my $events = sql('SELECT count(*) FROM clicks');
	is("$missing/$extra", '0/0', "$what: per_minute equals its defining query ($events events)");
	is(sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'every_event'}) .
		  '/' . sql(q{SELECT count(DISTINCT event_id) FROM stream.activations WHERE activation = 'every_event'}),
		"$events/$events", "$what: one firing per committed event");
	is(sql(q{SELECT count(*) FROM stream.activations a
		  WHERE a.activation = 'every_event'
		    AND NOT EXISTS (SELECT 1 FROM clicks c WHERE c.event_id = a.event_id)}),
		'0', "$what: no firing of an event that was rolled back");
}

# the firings of events seq in [from, to] follow seq (their insertion order)
sub check_order
{
	my ($from, $to, $what) = @_;
	is(sql(qq{SELECT count(*) FROM (
		  SELECT (payload->'properties'->>'seq')::int AS s,
		         lag((payload->'properties'->>'seq')::int) OVER (ORDER BY id) AS prev
		  FROM stream.activations WHERE activation = 'every_event'
		    AND (payload->'properties'->>'seq')::int BETWEEN $from AND $to) d
		WHERE s < prev}), '0', "$what: firings in the events' order");
}

sub slot_stats
{
	return sql(q{SELECT stream_txns || '/' || spill_txns FROM pg_stat_replication_slots
	  WHERE slot_name = (SELECT slot_name FROM pg_replication_slots
	                     WHERE plugin = 'stream_events' AND NOT temporary)});
}

sub streamed_txns { my ($s) = split m{/}, slot_stats(); return $s // 0; }

sub worker_pid
{
	return sql(q{SELECT pid FROM stream.worker_status()
	  WHERE datname = 'postgres' AND state = 'running'});
}

# the worker stays stopped (naptime 3600) until resume
sub pause_worker
{
	sql(q{ALTER SYSTEM SET stream_events.naptime = 3600});
	sql(q{SELECT pg_reload_conf()});
	StreamEventsTest::poll_until($node, 'postgres',
		q{SELECT count(*) FROM stream.worker_status() WHERE datname = 'postgres' AND state = 'running'}, '1');
	my $pid = worker_pid();
	sql("SELECT pg_terminate_backend($pid)");
	StreamEventsTest::poll_until($node, 'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0');
}

sub resume_worker
{
	sql(q{ALTER SYSTEM RESET stream_events.naptime});
	sql(q{SELECT pg_reload_conf()});
	sql(q{SELECT stream._extension_created()});
}

# 1. one large INSERT, the worker decoding while it runs
my $before = streamed_txns();
my $from = $seq + 1;
sql(events_sql(20000, 'view'));
check_all('one large INSERT, live');
check_order($from, $seq, 'one large INSERT, live');
cmp_ok(streamed_txns(), '>', $before, 'the large INSERT was streamed (' . slot_stats() . ')');

# 2. as a backlog, with subtransactions rolled back after their rows
pause_worker();
$before = streamed_txns();
$from = $seq + 1;
sql('BEGIN; ' . events_sql(3000, 'view')
	  . ' SAVEPOINT a; ' . events_sql(4000, 'cart') . ' ROLLBACK TO SAVEPOINT a; '
	  . ' SAVEPOINT b; ' . events_sql(3000, 'buy')
	  . ' SAVEPOINT c; ' . events_sql(3000, 'cart') . ' ROLLBACK TO SAVEPOINT c; '
	  . events_sql(2000, 'buy') . ' RELEASE SAVEPOINT b; '
	  . ' SAVEPOINT d; ' . events_sql(2000, 'view') . ' SAVEPOINT e; ' . events_sql(2000, 'cart')
	  . ' RELEASE SAVEPOINT e; ROLLBACK TO SAVEPOINT d; '
	  . events_sql(1000, 'view') . ' COMMIT;');
is(sql(qq{SELECT count(*) FROM clicks WHERE (properties->>'seq')::int >= $from}), '9000',
	'subtransactions: 9000 of the 20000 events committed');
# and a large transaction that aborts whole
sql('BEGIN; ' . events_sql(8000, 'abort') . ' ROLLBACK;');
resume_worker();
check_all('subtransactions rolled back, as a backlog');
check_order($from, $seq, 'subtransactions rolled back');
cmp_ok(streamed_txns(), '>', $before, 'the backlog was streamed (' . slot_stats() . ')');
is(sql(q{SELECT count(*) FROM per_minute WHERE event_name = 'abort'}), '0',
	'nothing of the aborted transaction reached the aggregate');

# 3. two large transactions interleaved, committing in the other order
my $s1 = $node->background_psql('postgres');
my $s2 = $node->background_psql('postgres');
$s1->query_safe('BEGIN');
$s2->query_safe('BEGIN');
for my $i (1 .. 4)
{
	$s1->query_safe(events_sql(2500, 'view'));
	$s2->query_safe(events_sql(2500, 'buy'));
	# midway, a definition changes: the worker reloads, dropping what it
	# kept of both, and decodes them again from the slot's restart point
	if ($i == 2)
	{
		sql(q{SELECT stream.on_event('reload', 'clicks', 'false')});
		sql(q{SELECT stream.flush(timeout => '60 s')});
		sql(q{SELECT stream.drop_activation('reload')});
	}
}
$s2->query_safe('COMMIT');
$s1->query_safe('COMMIT');
$s1->quit;
$s2->quit;
check_all('two interleaved transactions');

# 4. a crash with a streamed transaction open and one committed behind it
pause_worker();
$s1 = $node->background_psql('postgres');
$s1->query_safe('BEGIN');
$s1->query_safe(events_sql(6000, 'view'));
sql(events_sql(6000, 'buy'));
resume_worker();
StreamEventsTest::poll_until($node, 'postgres',
	qq{SELECT count(*) > 0 FROM stream.activations a WHERE activation = 'every_event'
	   AND (payload->'properties'->>'seq')::int = $seq}, 't');
# more of the open transaction after what the worker confirmed: decoded
# again after the restart, it is streamed again, and never ends
$s1->query_safe(events_sql(6000, 'view'));
my $crashed = $s1->query_safe('SELECT txid_current()');
StreamEventsTest::poll_until($node, 'postgres',
	q{SELECT stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name =
	    (SELECT slot_name FROM pg_replication_slots WHERE plugin = 'stream_events' AND NOT temporary)}, 't');
sql(q{ALTER DATABASE postgres SET log_min_messages = debug1});
$node->stop('immediate');
eval { $s1->quit; };
my $log_offset = -s $node->logfile;
$node->start;
check_all('after an immediate stop with a streamed transaction open');
# the open transaction's events were lost with it; the server goes on
sql(events_sql(5000, 'cart'));
check_all('after the crash, a new large transaction');
# what the worker kept of the crashed transaction is gone: PostgreSQL 15
# may or may not send an abort for it (streamed.c)
ok( $node->wait_for_log(
		qr/dropped the kept rows of (aborted )?transaction $crashed\b/, $log_offset),
	"the rows kept of the crashed transaction $crashed were dropped");
sql(q{ALTER DATABASE postgres RESET log_min_messages});

# 5. poison events inside a streamed transaction: the aggregate that fails on
# them skips them (dead letters), the rest of the transaction is applied,
# and the other definitions are untouched
sql(q{SELECT stream.create_aggregate('revenue', $$
SELECT user_id, sum(coalesce(properties->>'amount', '1')::numeric) AS revenue, count(*) AS n
FROM clicks GROUP BY 1 $$)});
sql(q{SELECT stream.flush('revenue', '120 s')});
$before = streamed_txns();
$from = $seq + 1;
sql('BEGIN; ' . events_sql(4000, 'view')
	  . q{ INSERT INTO clicks (event_name, user_id, properties)
	       SELECT 'view', 'poison', jsonb_build_object('price', 5, 'amount', 'N/A', 'seq', 0)
	       FROM generate_series(1, 3); }
	  . events_sql(4000, 'buy') . ' COMMIT;');
check_all('poison events in a streamed transaction');
check_order($from, $seq, 'poison events in a streamed transaction');
cmp_ok(streamed_txns(), '>', $before, 'the transaction with poison events was streamed');
sql(q{SELECT stream.flush('revenue', '120 s')});
is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition = 'revenue'
         AND event_id IN (SELECT event_id FROM clicks WHERE properties->>'amount' = 'N/A')}),
	'3', 'poison: one dead letter per poison event');
is(sql(q{SELECT string_agg(user_id || ':' || revenue || ':' || n, ',' ORDER BY user_id) FROM revenue}),
	sql(q{SELECT string_agg(user_id || ':' || revenue || ':' || n, ',' ORDER BY user_id) FROM (
	      SELECT user_id, sum(coalesce(properties->>'amount', '1')::numeric) AS revenue, count(*) AS n
	      FROM clicks c WHERE NOT EXISTS (SELECT 1 FROM stream.dead_letters l
	                        WHERE l.definition = 'revenue' AND l.event_id = c.event_id)
	      GROUP BY 1) s}),
	'poison: revenue equals its query over the events minus its dead letters');
is(sql(q{SELECT state FROM stream.aggregates WHERE name = 'revenue'}), 'running',
	'poison: revenue keeps running');

# 6. unstreamed: the same results with decode_streaming off
sql(q{ALTER SYSTEM SET stream_events.decode_streaming = off});
sql(q{SELECT pg_reload_conf()});
# the setting applies when the worker next starts decoding
pause_worker();
resume_worker();
$before = slot_stats();
$from = $seq + 1;
sql('BEGIN; ' . events_sql(5000, 'view') . ' SAVEPOINT a; ' . events_sql(3000, 'cart')
	  . ' ROLLBACK TO SAVEPOINT a; ' . events_sql(2000, 'buy') . ' COMMIT;');
check_all('decode_streaming off');
check_order($from, $seq, 'decode_streaming off');
my ($st_before, $sp_before) = split m{/}, $before;
my ($st_after, $sp_after) = split m{/}, slot_stats();
is($st_after, $st_before, 'decode_streaming off: nothing streamed');
cmp_ok($sp_after, '>', $sp_before, 'decode_streaming off: the transaction was spilled instead');

$node->stop;
done_testing();
