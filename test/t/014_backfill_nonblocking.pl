# A backfill does not block (issue 15, item 7).  A new aggregate over a
# stream of a million events backfills in a process of its own:
# - meanwhile an existing aggregate and an on_event activation of the same
#   database keep applying: events inserted during the backfill are in the
#   existing aggregate (equal to its defining query) and fired, while the
#   new aggregate is still backfilling (no applied LSN, its process runs);
# - afterwards the new aggregate equals its defining query, including the
#   events inserted during its backfill (nothing twice, nothing lost);
# - an unrelated open transaction makes the backfill wait for its
#   consistent point, not the other definitions;
# - a backfill process stopped with SIGTERM (promptly) starts again, one
#   SIGKILLed (the postmaster restarts everything) too: the aggregate ends
#   equal to its defining query both times.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $node = StreamEventsTest::new_node('backfill_nb', 'restart_after_crash = on');
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# polls $query every 20 ms until it returns $expected; returns what it got last
sub wait_for { return StreamEventsTest::poll_until($node, 'postgres', @_); }

my %query = (
	per_user => q{SELECT user_id, count(*) AS n, sum((properties->>'price')::numeric) AS revenue
FROM clicks GROUP BY 1},
	heavy => q{SELECT w.window_start, user_id, count(*) AS n,
       sum((properties->>'price')::numeric) AS revenue, avg((properties->>'price')::numeric) AS avg_price,
       max(occurred_at) AS last_seen
FROM clicks CROSS JOIN LATERAL stream.hop(occurred_at, '60 minutes', '10 minutes') AS w(window_start)
GROUP BY 1, 2},
	by_name => q{SELECT event_name, count(*) AS n FROM clicks GROUP BY 1},
	bun => q{SELECT user_id, event_name, count(*) AS n, sum((properties->>'price')::numeric) AS revenue
FROM clicks GROUP BY 1, 2},
	broken => q{SELECT key_of(user_id) AS k, count(*) AS n FROM clicks GROUP BY 1});

# missing/extra rows between the aggregate and its defining query
sub oracle_diff
{
	my ($agg) = @_;
	return sql(qq{WITH o AS MATERIALIZED ($query{$agg}), v AS MATERIALIZED (TABLE $agg)
SELECT (SELECT count(*) FROM (TABLE o EXCEPT ALL TABLE v) m) || '/' ||
       (SELECT count(*) FROM (TABLE v EXCEPT ALL TABLE o) e)});
}

sub create_aggregate
{
	my ($agg) = @_;
	sql("SELECT stream.create_aggregate('$agg', \$q\$ $query{$agg} \$q\$)");
}

my $backfill_running = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'stream_events backfill'};

sub backfill_pid
{
	my ($like) = @_;
	my $pid = '';
	my $until = time + 60;
	while (time < $until)
	{
		$pid = sql(qq{SELECT pid FROM pg_stat_activity
		  WHERE backend_type = 'stream_events backfill' AND query LIKE '%$like%'});
		return $pid if $pid ne '';
		usleep(20_000);
	}
	return $pid;
}

my $nlive = 0;

# live events of one user, in one transaction
sub insert_live
{
	my ($user, $n) = @_;
	sql(qq{INSERT INTO clicks (event_name, user_id, properties)
SELECT 'live', '$user', jsonb_build_object('price', i) FROM generate_series(1, $n) i});
	$nlive += $n;
}

sql('CREATE EXTENSION stream_events');
sql(q{SELECT stream.create_stream('clicks')});
my $t = time;
sql(q{INSERT INTO clicks (event_name, user_id, occurred_at, properties)
SELECT (ARRAY['view', 'cart', 'buy'])[1 + i % 3], 'u' || (i % 997), now() - (i % 7200) * interval '1 second',
       jsonb_build_object('price', i % 100)
FROM generate_series(1, 1000000) i});
note(sprintf('1,000,000 events inserted in %.1f s', time - $t));

create_aggregate('per_user');
sql(q{SELECT stream.on_event('live_act', 'clicks', $$event_name = 'live'$$, channel => 'live')});
sql(q{SELECT stream.flush('per_user', '120 s')});
is(oracle_diff('per_user'), '0/0', 'per_user equals its defining query after its backfill');

# ---- 1. the others apply while a new aggregate backfills ----------------
create_aggregate('heavy');
my $bf = backfill_pid('backfill of heavy: reading the stream');
isnt($bf, '', 'heavy backfills in a process of its own');
isnt($bf, sql(q{SELECT pid FROM stream.worker_status() WHERE datname = current_database()}),
	'not in the database worker');

insert_live('live_a', 50);
$t = time;
my $caught = wait_for(qq{SELECT (SELECT n FROM per_user WHERE user_id = 'live_a') || '/' ||
  (SELECT count(*) FROM stream.activations WHERE activation = 'live_act')}, "50/$nlive", 60);
my $lag = time - $t;
my $still = sql(qq{SELECT (SELECT applied_lsn IS NULL FROM stream.aggregate_defs
  WHERE view = 'heavy'::regclass) || '/' || ($backfill_running)});
is($caught, "50/$nlive",
	'events inserted during the backfill are applied to per_user and fired');
is($still, 'true/1', 'while heavy still backfills (no applied LSN, its process runs)');
note(sprintf('per_user and live_act caught up %.3f s after the commit, during the backfill', $lag));
is(oracle_diff('per_user'), '0/0', 'per_user equals its defining query during the backfill');
is(sql(qq{SELECT applied_lsn IS NULL FROM stream.aggregate_defs WHERE view = 'heavy'::regclass}), 't',
	'heavy was still backfilling after that check');
insert_live('live_a', 5);

sql(q{SELECT stream.flush('heavy', '180 s')});
is(oracle_diff('heavy'), '0/0',
	'heavy equals its defining query, with the events inserted during its backfill');
is(sql(qq{SELECT sum(n) FROM heavy WHERE user_id = 'live_a'}), 55 * 6,
	'those events are in it, each in its six hopping windows');
is(wait_for($backfill_running, '0', 30), '0', 'the backfill process has ended');
sql(q{SELECT stream.flush('per_user', '60 s')});
is(oracle_diff('per_user'), '0/0', 'per_user equals its defining query');

# ---- 2. an unrelated open transaction ------------------------------------
my $bg = $node->background_psql('postgres');
$bg->query_safe(q{BEGIN});
$bg->query_safe(q{SELECT txid_current()});
create_aggregate('by_name');
# Logical mode: the backfill's consistent point waits for transactions in
# progress.  Queue mode: a tick needs no wait (docs/queue-mode.md).
my $queue = StreamEventsTest::queue_mode();
if ($queue)
{
	is(wait_for(q{SELECT applied_lsn IS NOT NULL FROM stream.aggregate_defs WHERE view = 'by_name'::regclass},
			't', 60), 't', 'queue mode: by_name backfills without waiting for the open transaction');
}
else
{
	isnt(backfill_pid('backfill of by_name: waiting for a consistent point'), '',
		'by_name waits for the open transaction');
}
insert_live('live_b', 20);
is( wait_for(
		qq{SELECT (SELECT n FROM per_user WHERE user_id = 'live_b') || '/' ||
  (SELECT count(*) FROM stream.activations WHERE activation = 'live_act')}, "20/$nlive", 60),
	"20/$nlive", 'per_user and live_act apply while a backfill waits for an open transaction');
is( sql(qq{SELECT (SELECT applied_lsn IS NULL FROM stream.aggregate_defs WHERE view = 'by_name'::regclass)
  || '/' || (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'stream_events backfill'
             AND query LIKE '%consistent point%')}),
	$queue ? 'false/0' : 'true/1', 'by_name was still waiting then (logical mode only)');
$bg->query_safe(q{COMMIT});
$bg->quit;
# the consistent point needs a running_xacts record after the commit
sql('CHECKPOINT');
sql(q{SELECT stream.flush('by_name', '120 s')});
is(oracle_diff('by_name'), '0/0', 'by_name equals its defining query');

# ---- 3. an error of its own in a backfill parks that aggregate only ------
sql(q{CREATE FUNCTION key_of(u text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
    IF u = 'u5' THEN RAISE EXCEPTION 'no key for %', u; END IF;
    RETURN left(u, 2);
END $$});
sql(qq{SELECT stream.create_aggregate('broken', \$q\$ $query{broken} \$q\$, on_error => 'stop')});
is(wait_for(q{SELECT state FROM stream.aggregates WHERE name = 'broken'}, 'error', 60), 'error',
	'on_error stop: an error in its backfill parks broken');
like(sql(q{SELECT last_error FROM stream.aggregates WHERE name = 'broken'}),
	qr/no key for u5 \(SQLSTATE P0001/, 'its last_error says why, with the SQLSTATE');
insert_live('live_e', 5);
is( wait_for(qq{SELECT (SELECT n FROM per_user WHERE user_id = 'live_e') || '/' ||
  (SELECT count(*) FROM stream.activations WHERE activation = 'live_act')}, "5/$nlive", 30),
	"5/$nlive", 'the others go on');
usleep(3_000_000);
is( sql(qq{SELECT (SELECT state FROM stream.aggregates WHERE name = 'broken') || '/' || ($backfill_running)}),
	'error/0', 'it is not backfilled again while parked');
sql(q{CREATE OR REPLACE FUNCTION key_of(u text) RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT left(u, 2) $$});
sql(q{SELECT stream.resume('broken')});
sql(q{SELECT stream.flush('broken', '120 s')});
is(oracle_diff('broken'), '0/0', 'resumed, it backfills and equals its defining query');

# ---- 4. backfill processes stopped and killed -----------------------------
# groups are written as the backfill goes (in its transaction) before the
# kill; the backfill that starts again after it writes them at the end
# (faster)
# whether the backfill process has upserted into bun's state table
sub groups_written
{
	return qq{SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
  WHERE l.pid = $_[0] AND c.relname = 'bun_state' AND l.mode = 'RowExclusiveLock'};
}

sub batch_groups
{
	sql($_[0] ? "ALTER SYSTEM SET stream_events.aggregate_batch_groups = $_[0]"
		: 'ALTER SYSTEM RESET stream_events.aggregate_batch_groups');
	sql(q{SELECT pg_reload_conf()});
}
batch_groups(1000);
create_aggregate('bun');
$bf = backfill_pid('backfill of bun: reading the stream');
isnt($bf, '', 'bun backfills');
is(wait_for(groups_written($bf), '1', 30), '1', 'bun is mid-way: it has written groups');
is( sql(q{SELECT (SELECT count(*) FROM bun) || '/' ||
  (SELECT applied_lsn IS NULL FROM stream.aggregate_defs WHERE view = 'bun'::regclass)}),
	'0/true', 'none visible yet, no applied LSN');
batch_groups(0);
$t = time;
kill 'TERM', $bf;
is(wait_for(qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $bf}, '0', 10), '0',
	'SIGTERM ends the backfill process');
cmp_ok(time - $t, '<', 2, sprintf('promptly (%.2f s)', time - $t));
insert_live('live_c', 10);
sql(q{SELECT stream.flush('bun', '120 s')});
is(oracle_diff('bun'), '0/0', 'after SIGTERM: bun started again and equals its defining query');
like(slurp_file($node->logfile), qr/started the backfill of continuous aggregate bun(.|\n)*started the backfill of continuous aggregate bun/,
	'its backfill was started a second time');

batch_groups(1000);
sql(q{SELECT stream.rebuild_aggregate('bun')});
$bf = backfill_pid('backfill of bun: reading the stream');
isnt($bf, '', 'bun backfills again after rebuild_aggregate');
is(wait_for(groups_written($bf), '1', 30), '1', 'bun is mid-way again');
batch_groups(0);
kill 'KILL', $bf;
for (1 .. 600)
{
	# the server restarts: connections fail for a while
	my ($r, $o) = $node->psql('postgres',
		q{SELECT count(*) = 1 FROM stream.worker_status() WHERE datname = current_database() AND state = 'running'});
	last if $r == 0 && $o eq 't';
	usleep(100_000);
}
insert_live('live_d', 10);
sql(q{SELECT stream.flush(NULL, '180 s')});
is(oracle_diff('bun'), '0/0', 'after SIGKILL: bun equals its defining query');
is(oracle_diff('per_user'), '0/0', 'after SIGKILL: per_user too');
is(oracle_diff('by_name'), '0/0', 'after SIGKILL: by_name too');
is(oracle_diff('heavy'), '0/0', 'after SIGKILL: heavy too');
is( wait_for(q{SELECT count(*) || '/' || count(DISTINCT event_id) FROM stream.activations
  WHERE activation = 'live_act'}, "$nlive/$nlive", 30),
	"$nlive/$nlive", 'every live event fired once');
is(sql(q{SELECT string_agg(state || ':' || coalesce(last_error, ''), ',' ORDER BY name) FROM stream.aggregates}),
	'running:,running:,running:,running:,running:', 'every aggregate runs, no error left');
my $log = slurp_file($node->logfile);
is(scalar(() = $log =~ /WARNING:  stream_events parked/g), 1, 'only broken was ever parked');
unlike($log, qr/TRAP|terminated by signal (?!9)/, 'no crash but the SIGKILL');

$node->stop;
done_testing();
