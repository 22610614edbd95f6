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
# - a worker SIGKILLed just after 20,000 events committed: the oracles are
#   still exact;
# - status views: stream.activation_status, dead_letters counts, idle lag 0;
# - n_tup_ins of a state table is reported (pgstat from the worker);
# and the fault suite of issue 15 item 14:
# - concurrent overlapping batches: long transactions (the first to start
#   commits last, one rolls back, one rolls back a savepoint) around
#   hundreds of short ones from pgbench, some with poison events: both
#   aggregates equal their oracle, the dead letters are the poison events,
#   the activation fired once per committed matching event;
# - one transaction of 1M events under consumer_memory = 16MB, the worker
#   SIGKILLed in the middle of its apply: after the restart each aggregate
#   equals its oracle (the skipping one minus its dead letters), the dead
#   letters are the poison events of that aggregate only, the activation
#   fired once per event, the worker spilled, and its private memory
#   (RssAnon) stayed under 176 MB;
# - no crash in the log.
# The rest of item 14 is elsewhere: a non-inlined SQL function as a group
# key in 032, a definition that fails for its owner only in 030 (its
# availability part), DDL on a stream, a dropped default partition and
# far-future/far-past events in 034, infinity timestamps (refused at the
# door) in sql/ingest.sql.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use IPC::Run;

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


# ------------------------------------------------------------------------
# Shared by the cases below.

# "missing/extra": rows of $oracle not in $view, rows of $view not in
# $oracle (EXCEPT ALL both ways: a group counted twice is a difference too)
sub differences
{
	my ($view, $oracle) = @_;
	return sql(qq{SELECT (SELECT count(*) FROM (($oracle) EXCEPT ALL ($view)) m) || '/' ||
	                     (SELECT count(*) FROM (($view) EXCEPT ALL ($oracle)) e)});
}

# the stream_events worker of this database
sub worker_pid
{
	return sql(q{SELECT pid FROM pg_stat_activity
	             WHERE backend_type LIKE 'stream_events%' AND datname = current_database()});
}

# the worker's private memory (RssAnon: heap and anonymous maps, not the
# shared buffers it touched), in kB; 0 once the process is gone
sub rss_anon_kb
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return 0;
	my $kb = 0;
	while (<$fh>)
	{
		$kb = $1 if /^RssAnon:\s+(\d+) kB/;
	}
	close $fh;
	return $kb;
}

# true when every definition of $stream has applied up to $lsn; its
# aggregates and activations are read from their status views (a parked one
# never gets there)
sub applied_up_to
{
	my ($stream, $lsn) = @_;
	return sql(qq{SELECT bool_and(applied_lsn >= '$lsn') FROM (
	    SELECT applied_lsn FROM stream.aggregates WHERE stream = '$stream'
	    UNION ALL
	    SELECT applied_lsn FROM stream.activation_status WHERE stream = '$stream') d}) eq 't';
}

# ------------------------------------------------------------------------
# Concurrent overlapping batches (issue 15 item 14).  The worker decodes
# transactions in commit order, and applies what has committed while older
# transactions are still open: here a long transaction that started first
# commits last, a second one starts after it and commits in the middle, a
# third rolls back, one rolls back a savepoint, and four pgbench clients
# commit (or roll back) hundreds of short ones in between, some with a poison
# price.  Each aggregate must equal its query, the skipping one minus its
# dead letters, the dead letters must be exactly the poison events (for that
# aggregate only), and the activation must fire once per committed matching
# event, none for a rolled-back one.
sql(q{SELECT stream.create_stream('conc')});
sql(q{SELECT stream.create_aggregate('conc_users', $$
SELECT user_id, count(*) AS n, count(*) FILTER (WHERE event_name = 'buy') AS buys,
       max(occurred_at) AS last_seen
FROM conc GROUP BY 1 $$)});
sql(q{SELECT stream.create_aggregate('conc_revenue', $$
SELECT event_name, sum((properties->>'price')::numeric) AS revenue, count(*) AS n
FROM conc GROUP BY 1 $$, on_error => 'skip')});
sql(q{SELECT stream.on_event('conc_buys', 'conc', $$event_name = 'buy'$$)});
sql(q{SELECT stream.flush(NULL, '60 s')});

# $n events from session $src; one in 97 (by $seed + g) has the price 'N/A'
sub conc_insert
{
	my ($src, $n, $seed) = @_;
	return qq{INSERT INTO conc (event_name, user_id, properties)
SELECT CASE WHEN g % 3 = 0 THEN 'buy' ELSE 'view' END, 'c' || (g % 50),
       jsonb_build_object('src', '$src', 'price',
           CASE WHEN ($seed + g) % 97 = 0 THEN 'N/A' ELSE (g % 100)::text END)
FROM generate_series(1, $n) g;};
}

my $short_script = q{
\set r random(1, 1000000000)
BEGIN;
INSERT INTO conc (event_name, user_id, properties)
SELECT CASE WHEN (:r + g) % 3 = 0 THEN 'buy' ELSE 'view' END, 'c' || ((:r + g) % 50),
       jsonb_build_object('src', 'short', 'price',
           CASE WHEN (:r + g) % 97 = 0 THEN 'N/A' ELSE ((:r + g) % 100)::text END)
FROM generate_series(1, 1 + :r % 5) g;
\if :r % 10 = 0
ROLLBACK;
\else
COMMIT;
\endif
};

my $long1 = $node->background_psql('postgres');
my $long2 = $node->background_psql('postgres');
my $long3 = $node->background_psql('postgres');
$long1->query_safe('BEGIN; ' . conc_insert('long1', 3000, 1));
$long2->query_safe('BEGIN; ' . conc_insert('long2', 2000, 2)
	  . q{ SAVEPOINT s; } . conc_insert('long2_undone', 500, 3) . q{ ROLLBACK TO SAVEPOINT s;});
$long3->query_safe('BEGIN; ' . conc_insert('long3_undone', 1000, 4));
$node->pgbench('--no-vacuum --client=4 --jobs=2 --transactions=150',
	0, [qr{processed: 600/600}], [qr{^$}], 'short transactions while three long ones are open',
	{ 'conc_short_1' => $short_script });
$long2->query_safe(conc_insert('long2', 1000, 5) . ' COMMIT;');
$node->pgbench('--no-vacuum --client=4 --jobs=2 --transactions=150',
	0, [qr{processed: 600/600}], [qr{^$}], 'short transactions while two are open',
	{ 'conc_short_2' => $short_script });
$long3->query_safe('ROLLBACK;');
$long1->query_safe(conc_insert('long1', 2000, 6) . ' COMMIT;');
$_->quit for ($long1, $long2, $long3);
# (flush waits for every aggregate and batched activation; it raises if one
# is parked or behind after the timeout)
sql(q{SELECT stream.flush(NULL, '120 s')});

is(sql(q{SELECT count(*) FILTER (WHERE properties->>'src' = 'long1') || ',' ||
                count(*) FILTER (WHERE properties->>'src' = 'long2') || ',' ||
                count(*) FILTER (WHERE properties->>'src' LIKE '%undone') || ',' ||
                (count(*) FILTER (WHERE properties->>'src' = 'short') > 1000)::text
         FROM conc}), '5000,3000,0,true',
	'concurrent: the long transactions committed, the undone work did not');
my $conc_users_query = q{SELECT user_id, count(*) AS n, count(*) FILTER (WHERE event_name = 'buy') AS buys,
       max(occurred_at) AS last_seen FROM conc GROUP BY 1};
is(differences('TABLE conc_users', $conc_users_query), '0/0',
	'concurrent: conc_users equals its query both ways ('
	  . sql('SELECT count(*) FROM conc_users') . ' groups)');
is(differences('TABLE conc_revenue', q{
SELECT event_name, sum((properties->>'price')::numeric) AS revenue, count(*) AS n
FROM conc c WHERE NOT EXISTS (SELECT 1 FROM stream.dead_letters l
                              WHERE l.definition = 'conc_revenue' AND l.event_id = c.event_id)
GROUP BY 1}), '0/0', 'concurrent: conc_revenue equals its query over the events minus its dead letters');
my $conc_poison = sql(q{SELECT count(*) FROM conc WHERE properties->>'price' = 'N/A'});
cmp_ok($conc_poison, '>', 50, "concurrent: there are poison events ($conc_poison)");
is(differences(q{SELECT event_id FROM stream.dead_letters WHERE definition = 'conc_revenue'},
		q{SELECT event_id FROM conc WHERE properties->>'price' = 'N/A'}), '0/0',
	'concurrent: the dead letters of conc_revenue are the poison events, each once');
is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition IN ('conc_users', 'conc_buys')}), '0',
	'concurrent: no dead letters for the other definitions');
is(differences(q{SELECT event_id FROM stream.activations WHERE activation = 'conc_buys'},
		q{SELECT event_id FROM conc WHERE event_name = 'buy'}), '0/0',
	'concurrent: conc_buys fired exactly once per committed buy ('
	  . sql(q{SELECT count(*) FROM conc WHERE event_name = 'buy'}) . ')');

# ------------------------------------------------------------------------
# A large transaction under the smallest consumer_memory, and the worker
# SIGKILLed while it applies it (issue 15 item 14; principle 7: memory
# stays bounded whatever the size of a transaction).
#
# One INSERT ... SELECT of $big_n events, one transaction, into a stream
# with a per-user aggregate (users in runs of ten events: $big_n / 10
# groups, far more than 16MB holds), a revenue aggregate that skips the
# events whose price is 'N/A', and an on_event('true') activation.  With
# consumer_memory at its floor the worker spills groups, queued firings and
# dead letters to temporary files while it decodes.  Once it applies (its
# apply transaction has an xid, and nothing is applied yet) it is
# SIGKILLed; the postmaster reinitialises, and the new worker decodes the
# transaction again and applies it once.  The worker's RssAnon is sampled
# every 0.2 s all along: while the producer inserts (the reorder buffer
# decodes as WAL is flushed), while the first worker decodes and applies,
# and while the second one does it all again.
#
# Measured 2026-12-02 on the 2-core machine (other test runs sharing it):
#
#   events     insert   decode until SIGKILL   decode + apply again   peak RssAnon   031 in all
#   1,000,000  7-11 s   12-14 s                38-40 s                92 MB          83 s
#   1,500,000  10 s     16 s                   71 s                   92 MB          115 s
#   2,000,000  14 s     26 s                   83 s                   92 MB          153 s
#
# 2M (FAULTS_BIG_EVENTS=2000000) takes 2.5 minutes here, mostly the apply
# (2M outbox rows, 400k upserts) and decoding it twice.  The default is
# 1M: at 1.5M, 031 took 226-238 s in the make test runs of stop 19 and the
# whole make test 14.8 minutes, at the 15-minute limit; 1M still makes
# 100,000 groups, far more than 16MB holds.  The peak is the reorder buffer's (up to
# logical_decoding_work_mem, 64MB, while the producer's transaction is
# decoded as its WAL is flushed); freed memory is not given back to the
# system, so RssAnon stays near it while the sinks fold and apply: it does not grow with the size of
# the transaction.
#
# Not asserted (a limit of src/aggregate/upsert.c, reported): users that
# recur all through the transaction (FAULTS_BIG_RECURRING=1: user i % groups
# instead of runs of ten) put every group in every spill, and the apply
# upserts the same group once per spill in one transaction; each update of
# a row this transaction wrote before costs a combo CID in
# TopTransactionContext ("Combo CIDs" 21 MB and growing, 600k events over
# 100k users), so RssAnon grows with the transaction: 34 -> 102 MB while
# applying 1M events, a peak of 211 MB (over the bound) and an apply of
# 232 s for 2M.
my $big_n = $ENV{FAULTS_BIG_EVENTS} // 1_000_000;
my $big_user = $ENV{FAULTS_BIG_RECURRING} ? 'i % ' . int($big_n / 10) : 'i / 10';
my $big_poison = int(($big_n - 7) / 200000) + 1;
# the bound: consumer_memory (16MB) + the reorder buffer's
# logical_decoding_work_mem (64MB) + 96MB for everything else (caches,
# plans, the decoding context, glibc's arenas)
my $rss_bound_kb = (16 + 64 + 96) * 1024;

sql(q{ALTER SYSTEM SET stream_events.consumer_memory = '16MB'});
# DEBUG1 only until the transaction is applied: the spill's log line
sql(q{ALTER SYSTEM SET log_min_messages = 'debug1'});
sql(q{SELECT pg_reload_conf()});
sql(q{SELECT stream.create_stream('big')});
sql(q{SELECT stream.create_aggregate('big_users', $$
SELECT user_id, count(*) AS n, max(occurred_at) AS last_seen FROM big GROUP BY 1 $$)});
sql(q{SELECT stream.create_aggregate('big_revenue', $$
SELECT user_id, sum((properties->>'price')::numeric) AS revenue FROM big GROUP BY 1 $$,
on_error => 'skip')});
sql(q{SELECT stream.on_event('big_all', 'big', 'true')});
sql(q{SELECT stream.flush(NULL, '60 s')});

my %peak_kb;
my $worker = worker_pid();

sub sample_rss
{
	my $kb = rss_anon_kb($worker);
	$peak_kb{$worker} = $kb if $kb > ($peak_kb{$worker} // 0);
}

# the producer's transaction runs in the background while we sample; it
# prints an LSN taken before its commit: once a definition has applied up
# to it, it has applied the transaction (applied LSNs are commit LSNs)
my ($insert_out, $insert_err) = ('', '');
my $t0 = time;
my $insert = IPC::Run::start(
	[
		$node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
		'-d', $node->connstr('postgres'), '-c',
		qq{INSERT INTO big (event_name, user_id, properties)
SELECT 'buy', 'b' || ($big_user),
       jsonb_build_object('price', CASE WHEN i % 200000 = 7 THEN 'N/A' ELSE (i % 13)::text END)
FROM generate_series(1, $big_n) i;
SELECT pg_current_wal_insert_lsn()}
	],
	'>', \$insert_out, '2>', \$insert_err);
while ($insert->pumpable)
{
	sample_rss();
	usleep(200_000);
	$insert->pump_nb;
}
ok($insert->finish, "one transaction inserted $big_n events") or diag($insert_err);
my ($big_lsn) = $insert_out =~ /([0-9A-F]+\/[0-9A-F]+)\s*$/;
my $t_insert = time - $t0;
# another stream's events, committed after the big transaction
insert_events(20601, 20700);

# wait until the worker applies: its apply transaction has an xid (the
# same one twice, 0.2 s apart: not a short maintenance transaction) and
# nothing of the big transaction is applied yet
my ($apply_xid, $seen) = ('', '');
for (1 .. 3000)
{
	sample_rss();
	my ($xid, $applied) = split /\|/, sql(qq{
		SELECT coalesce(backend_xid::text, ''),
		       (SELECT count(*) FROM stream.aggregates WHERE stream = 'big' AND applied_lsn >= '$big_lsn')
		FROM pg_stat_activity WHERE pid = $worker});
	last if $applied ne '0';
	if ($xid ne '' && $xid eq $seen)
	{
		$apply_xid = $xid;
		kill 'KILL', $worker;
		last;
	}
	$seen = $xid;
	usleep(200_000);
}
my $t_decode = time - $t0 - $t_insert;
isnt($apply_xid, '', "the worker was SIGKILLed while it applied the transaction (xid $apply_xid)");

# the postmaster reinitialises: connections fail for a while
my $new_worker;
for (1 .. 1200)
{
	$new_worker = eval {
		my ($r, $o) = $node->psql('postgres', q{SELECT pid FROM pg_stat_activity
		    WHERE backend_type LIKE 'stream_events%' AND datname = current_database()});
		# the killed worker may still be listed until the postmaster reacts
		$r == 0 && $o =~ /^\d+$/ && $o != $worker ? $o : undef;
	};
	last if $new_worker;
	usleep(100_000);
}
ok($new_worker && $new_worker != $worker, 'a new worker after the restart');
# (a new cluster's xids are in epoch 0: the xid is its xid8)
is(sql(qq{SELECT pg_xact_status('$apply_xid'::xid8)}), 'aborted',
	'the killed apply transaction never committed');
$worker = $new_worker;
my $applied = 0;
for (1 .. 3000)
{
	sample_rss();
	last if ($applied = applied_up_to('big', $big_lsn));
	usleep(200_000);
}
my $t_apply = time - $t0 - $t_insert - $t_decode;
ok($applied, 'after the restart the big transaction is applied');
sql(q{ALTER SYSTEM RESET log_min_messages});
sql(q{SELECT pg_reload_conf()});
my ($peak_first, $peak_second) = map { int(($peak_kb{$_} // 0) / 1024) } sort keys %peak_kb;
diag(sprintf('%d events in one transaction: insert %.0f s, decode until SIGKILL %.0f s, '
		  . 'decode and apply after the restart %.0f s; peak RssAnon of the workers %s MB',
		$big_n, $t_insert, $t_decode, $t_apply,
		join(' and ', map { int($peak_kb{$_} / 1024) } sort { $a <=> $b } keys %peak_kb)));

my $peak = (sort { $b <=> $a } values %peak_kb)[0];
cmp_ok($peak, '<', $rss_bound_kb,
	'the worker\'s private memory stayed under 16MB + 64MB + 96MB (peak '
	  . int($peak / 1024) . ' MB)');
like(slurp_file($node->logfile), qr/\[$worker\] DEBUG:  stream_events spilled the batches of a large transaction/,
	'the worker spilled what it folded past consumer_memory');

my $users = sql(q{SELECT count(*) FROM big_users});
is(differences('TABLE big_users', q{SELECT user_id, count(*) AS n, max(occurred_at) AS last_seen FROM big GROUP BY 1}),
	'0/0', "big_users equals its query both ways ($users groups)");
is(differences('TABLE big_revenue', q{
SELECT user_id, sum((properties->>'price')::numeric) AS revenue FROM big b
WHERE NOT EXISTS (SELECT 1 FROM stream.dead_letters l
                  WHERE l.definition = 'big_revenue' AND l.event_id = b.event_id)
GROUP BY 1}), '0/0', 'big_revenue equals its query over the events minus its dead letters');
is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition = 'big_revenue'}), $big_poison,
	"one dead letter per poison event ($big_poison)");
is(differences(q{SELECT event_id FROM stream.dead_letters WHERE definition = 'big_revenue'},
		q{SELECT event_id FROM big WHERE properties->>'price' = 'N/A'}), '0/0',
	'the dead letters of big_revenue are the poison events');
is(sql(q{SELECT count(*) FROM stream.dead_letters WHERE definition IN ('big_users', 'big_all')}), '0',
	'no dead letters for the other definitions of big');
# (count = distinct = the number of events, and none for an event_id that is
# not in big: one firing per event)
is(sql(q{SELECT count(*) || '/' || count(DISTINCT event_id) FROM stream.activations WHERE activation = 'big_all'})
	  . '/' . sql(q{SELECT count(*) FROM stream.activations a WHERE activation = 'big_all'
	                AND NOT EXISTS (SELECT 1 FROM big b WHERE b.event_id = a.event_id)}),
	"$big_n/$big_n/0", 'big_all fired exactly once per event');
is(sql(q{SELECT string_agg(state, ',' ORDER BY name) FROM stream.aggregates WHERE stream = 'big'}), 'running,running',
	'the big aggregates run');

# the definitions of the other stream went on
sql(q{SELECT stream.flush(NULL, '120 s')});
is(sql($counts_view), sql($counts_oracle), 'after the big transaction: counts exact');
is(sql($revenue_view), sql($revenue_oracle), 'after the big transaction: revenue exact');
is(sql(q{SELECT count(*) || '/' || count(DISTINCT event_id) FROM stream.activations WHERE activation = 'all_buys'}),
	'20600/20600', 'after the big transaction: all_buys fired once per event');

my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal (?!9)/, 'no crash in the log');
done_testing();
