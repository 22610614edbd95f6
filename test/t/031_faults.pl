# Poison events and parked definitions (issue 15, items 2, 4, 5):
# - on_error => 'skip' (the default): an event whose cast fails in one
#   aggregate is left out of that aggregate only and kept in
#   stream.dead_letters (SQLSTATE 22P02, its event_id), once; the aggregate
#   equals its defining query over the events minus its dead letters; the
#   other aggregate and an activation keep their oracle and firings;
# - a failing activation condition skips that event for that activation;
# - on_error => 'stop' parks only that definition (state error, last_error
#   with SQLSTATE and event_id); stream.resume after the cause is fixed
#   (CREATE OR REPLACE of the function its key calls) replays it from its
#   applied LSN, without a rebuild: oracle exact;
# - stream.retry_dead_letters applies the dead letters again once the cause
#   is fixed, exactly once, and deletes them;
# - a function dropped under an activation's condition parks it (it is the
#   definition's error, not the events'): the others go on;
# - a worker SIGKILLed mid-apply: the oracles are still exact;
# - status views: stream.activation_status, dead_letters counts, idle lag 0;
# - n_tup_ins of a state table is reported (pgstat from the worker);
# - no crash in the log.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = StreamEventsTest::new_node('faults');
# a SIGKILLed worker makes the postmaster reinitialise (not shut down)
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub wait_for
{
	my ($query, $expected, $seconds) = @_;
	my $got;
	for (1 .. ($seconds // 60) * 10)
	{
		$got = sql($query);
		return $got if $got eq $expected;
		usleep(100_000);
	}
	return $got;
}

sql('CREATE EXTENSION stream_events');
sql(q{SELECT stream.create_stream('clicks')});
sql(q{
CREATE FUNCTION region_of(p jsonb) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
    IF p->>'region' = 'bad' THEN RAISE EXCEPTION 'bad region'; END IF;
    RETURN p->>'region';
END $$;
CREATE FUNCTION is_vip(p jsonb) RETURNS boolean IMMUTABLE LANGUAGE sql
    SET search_path = public AS $$ SELECT (p->>'level')::int > 5 $$;
});

# events: some with a price that is not a number
sub insert_events
{
	my ($from, $to) = @_;
	sql(qq{INSERT INTO clicks (event_name, user_id, properties)
SELECT 'buy', 'u' || (i % 7),
       jsonb_build_object('price', CASE WHEN i % 50 = 0 THEN 'N/A' ELSE (i % 13)::text END,
                          'region', CASE WHEN i % 40 = 0 AND i > 100 THEN 'bad' ELSE 'r' || (i % 3) END,
                          'level', CASE WHEN i % 60 = 0 THEN 'x' ELSE (i % 10)::text END)
FROM generate_series($from, $to) i});
}

insert_events(1, 100);

# revenue (skip): the cast fails on 'N/A'; counts: no failure; by_region
# (stop): its key raises on 'bad'
sql(q{SELECT stream.create_aggregate('revenue', $$
SELECT user_id, sum((properties->>'price')::numeric) AS revenue, count(*) AS n
FROM clicks GROUP BY 1 $$)});
sql(q{SELECT stream.create_aggregate('counts', $$
SELECT user_id, count(*) AS n FROM clicks GROUP BY 1 $$)});
sql(q{SELECT stream.create_aggregate('by_region', $$
SELECT region_of(properties) AS region, count(*) AS n FROM clicks GROUP BY 1 $$,
on_error => 'stop')});
sql(q{SELECT stream.on_event('all_buys', 'clicks', $$event_name = 'buy'$$, channel => 'buys')});
sql(q{SELECT stream.on_event('vips', 'clicks', $$is_vip(properties)$$, channel => 'vips')});
sql(q{SELECT stream.flush('revenue', '60 s')});
sql(q{SELECT stream.flush('counts', '60 s')});

insert_events(101, 300);
sql(q{SELECT stream.flush('counts', '60 s')});
sql(q{SELECT stream.flush('revenue', '60 s')});

my $revenue_oracle = q{
SELECT string_agg(user_id || ':' || revenue || ':' || n, ',' ORDER BY user_id) FROM (
SELECT user_id, sum((properties->>'price')::numeric) AS revenue, count(*) AS n
FROM clicks c
WHERE NOT EXISTS (SELECT 1 FROM stream.dead_letters l
                  WHERE l.definition = 'revenue' AND l.event_id = c.event_id)
GROUP BY 1) s};
my $revenue_view = q{SELECT string_agg(user_id || ':' || revenue || ':' || n, ',' ORDER BY user_id) FROM revenue};
my $counts_oracle = q{SELECT string_agg(user_id || ':' || n, ',' ORDER BY user_id) FROM (SELECT user_id, count(*) AS n FROM clicks GROUP BY 1) s};
my $counts_view = q{SELECT string_agg(user_id || ':' || n, ',' ORDER BY user_id) FROM counts};

is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition = 'revenue'}), '6',
	'skip: one dead letter per N/A price (backfill and decoded)');
is(sql(q{SELECT count(DISTINCT event_id) FROM stream.dead_letters
         WHERE definition = 'revenue' AND sqlstate = '22P02' AND kind = 'aggregate'
           AND event_id IN (SELECT event_id FROM clicks WHERE properties->>'price' = 'N/A')}), '6',
	'dead letters carry 22P02 and the event_id');
is(sql($revenue_view), sql($revenue_oracle), 'revenue = its query over the events minus its dead letters');
is(sql($counts_view), sql($counts_oracle), 'the other aggregate keeps its oracle');
is(wait_for(q{SELECT state FROM stream.aggregates WHERE name = 'by_region'}, 'error'), 'error',
	'stop: by_region is parked');
like(sql(q{SELECT last_error FROM stream.aggregates WHERE name = 'by_region'}),
	qr/bad region \(SQLSTATE P0001, event_id [0-9a-f-]+, commit /, 'its last_error names SQLSTATE, event and commit');
is(sql(q{SELECT state FROM stream.aggregates WHERE name = 'revenue'}), 'running', 'revenue runs');
is(sql(q{SELECT dead_letters FROM stream.aggregates WHERE name = 'revenue'}), '6', 'stream.aggregates counts dead letters');

is(wait_for(q{SELECT count(*) FROM stream.activations WHERE activation = 'all_buys'}, '200'), '200',
	'the activation fired once per event since it was created');
# vips: level 'x' fails the cast in is_vip (skip): dead letters, others fire
is(wait_for(q{SELECT count(*) FROM stream.dead_letters WHERE definition = 'vips'}, '4'), '4',
	'a failing activation condition: the event is a dead letter of that activation');
is(sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'vips'}),
	sql(q{SELECT count(*) FROM clicks c WHERE c.properties->>'level' ~ '^[0-9]+$' AND (c.properties->>'level')::int > 5
          AND c.received_at > (SELECT created_at FROM stream.activation_defs WHERE name = 'vips')}),
	'vips fired for every matching event');
is(sql(q{SELECT state || ',' || dead_letters FROM stream.activation_status WHERE name = 'vips'}), 'running,4',
	'stream.activation_status: state and dead letters');

# resume of a running definition, unknown names, bad on_error
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT stream.resume('revenue')});
like($err, qr/is not parked.*HINT/s, 'resume of a running definition: error with HINT');
($rc, $out, $err) = $node->psql('postgres', q{SELECT stream.retry_dead_letters('nope')});
like($err, qr/does not exist.*HINT/s, 'retry of an unknown definition: error with HINT');

# fix the key, resume: by_region replays from its applied LSN
sql(q{CREATE OR REPLACE FUNCTION region_of(p jsonb) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RETURN p->>'region'; END $$});
sql(q{SELECT stream.resume('by_region')});
sql(q{SELECT stream.flush('by_region', '60 s')});
# decoding sees the function as it was when each event committed: the
# events before the fix are dead letters now; retried with today's function
is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition = 'by_region'}), '5',
	'resume: events that still fail as they did are dead letters');
is(sql(q{SELECT stream.retry_dead_letters('by_region')}), '5', 'retry of by_region asks for 5');
sql(q{SELECT stream.flush('by_region', '60 s')});
is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition = 'by_region'}), '0',
	'retried with the fixed function: applied and deleted');
is(sql(q{SELECT events_backfilled FROM stream.aggregates WHERE name = 'by_region'}), '100',
	'by_region was not rebuilt (its backfill count stays)');
is(sql(q{SELECT string_agg(region || ':' || n, ',' ORDER BY region) FROM by_region}),
	sql(q{SELECT string_agg(region || ':' || n, ',' ORDER BY region) FROM (SELECT properties->>'region' AS region, count(*) AS n FROM clicks GROUP BY 1) s}),
	'resumed by_region equals its query (replayed, exactly once)');

# retry of revenue's dead letters with nothing fixed: they stay, retried once
is(sql(q{SELECT stream.retry_dead_letters('revenue')}), '6', 'retry_dead_letters asks for 6');
sql(q{SELECT stream.flush('revenue', '60 s')});
is(sql(q{SELECT count(*) || ',' || min(retries) FROM stream.dead_letters WHERE definition = 'revenue'}), '6,1',
	'still failing dead letters stay, retried once');
is(sql($revenue_view), sql($revenue_oracle), 'revenue unchanged by a failed retry');

# vips: fix the function, retry: the three events fire now, exactly once
sql(q{CREATE OR REPLACE FUNCTION is_vip(p jsonb) RETURNS boolean IMMUTABLE LANGUAGE sql
    SET search_path = public AS $$ SELECT CASE WHEN p->>'level' = 'x' THEN true ELSE (p->>'level')::int > 5 END $$});
is(sql(q{SELECT stream.retry_dead_letters('vips')}), '4', 'retry of vips asks for 4');
sql(q{SELECT stream.flush(NULL, '60 s')});
is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition = 'vips'}), '0', 'vips dead letters applied and deleted');
is(sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'vips' AND event_id IN
         (SELECT event_id FROM clicks WHERE properties->>'level' = 'x' AND received_at > (SELECT created_at FROM stream.activation_defs WHERE name = 'vips'))}), '4',
	'each retried event fired once');
sql(q{SELECT stream.flush(NULL, '60 s')});
is(sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'vips' AND event_id IN
         (SELECT event_id FROM clicks WHERE properties->>'level' = 'x' AND received_at > (SELECT created_at FROM stream.activation_defs WHERE name = 'vips'))}), '4',
	'and only once');

# a dropped function under a condition parks that activation only
sql(q{CREATE FUNCTION doomed(e text) RETURNS boolean IMMUTABLE LANGUAGE sql SET search_path = public AS $$ SELECT e = 'buy' $$});
sql(q{SELECT stream.on_event('doomed_act', 'clicks', $$doomed(event_name)$$)});
sql(q{SELECT stream.flush(NULL, '60 s')});
sql(q{DROP FUNCTION doomed(text)});
insert_events(301, 400);
is(wait_for(q{SELECT state FROM stream.activation_status WHERE name = 'doomed_act'}, 'error'), 'error',
	'a dropped function parks its activation');
sql(q{SELECT stream.flush('counts', '60 s')});
sql(q{SELECT stream.flush('revenue', '60 s')});
is(sql($counts_view), sql($counts_oracle), 'counts still exact');
is(sql($revenue_view), sql($revenue_oracle), 'revenue still exact');
is(wait_for(q{SELECT count(*) FROM stream.activations WHERE activation = 'all_buys'}, '300'), '300',
	'all_buys still fires');
sql(q{SELECT stream.drop_activation('doomed_act')});

is(wait_for(q{SELECT n_tup_ins > 0 FROM pg_stat_user_tables WHERE relname = 'counts_state'}, 't', 30), 't',
	'the worker reports its inserts to the cumulative statistics');

# a worker SIGKILLed mid-apply (the postmaster restarts the cluster)
my $pid = sql(q{SELECT pid FROM stream.worker_status() WHERE datname = current_database()});
insert_events(401, 20400);
usleep(50_000);
kill 'KILL', $pid;
for (1 .. 1200)
{
	# the server restarts: connections fail for a while
	my $up = eval {
		my ($r, $o) = $node->psql('postgres',
			q{SELECT count(*) = 1 FROM stream.worker_status() WHERE datname = current_database() AND state = 'running'});
		$r == 0 && $o eq 't';
	};
	last if $up;
	usleep(100_000);
}
insert_events(20401, 20600);
sql(q{SELECT stream.flush('counts', '120 s')});
sql(q{SELECT stream.flush('revenue', '120 s')});
sql(q{SELECT stream.flush('by_region', '120 s')});
is(sql($counts_view), sql($counts_oracle), 'after SIGKILL: counts exact');
is(sql($revenue_view), sql($revenue_oracle), 'after SIGKILL: revenue exact');
is(sql(q{SELECT count(*) = count(DISTINCT event_id) FROM stream.dead_letters WHERE definition = 'revenue'}), 't',
	'after SIGKILL: each dead letter once');
is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition = 'revenue'}),
	sql(q{SELECT count(*) FROM clicks WHERE properties->>'price' = 'N/A'}), 'one dead letter per poison event');
is(wait_for(q{SELECT count(*) FROM stream.activations WHERE activation = 'all_buys'}, '20500'), '20500',
	'after SIGKILL: every event fired once');
is(sql(q{SELECT count(*) = count(DISTINCT event_id) FROM stream.activations WHERE activation = 'all_buys'}), 't',
	'one firing per event_id');

# idle lag 0
is(wait_for(q{SELECT bool_and(lag_bytes = 0) FROM stream.aggregates WHERE state = 'running'}, 't', 30), 't',
	'idle: lag_bytes 0');
# bad input
($rc, $out, $err) = $node->psql('postgres', q{SELECT stream.create_aggregate('x', 'SELECT user_id, count(*) FROM clicks GROUP BY 1', on_error => 'ignore')});
like($err, qr/invalid on_error.*HINT/s, 'bad on_error: error with HINT');

my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal (?!9)/, 'no crash in the log');
done_testing();
