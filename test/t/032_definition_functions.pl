# Every kind of function works in a definition (issue 15, item 3), and runs
# as the definition's owner (issue 12):
# - group keys, WHERE, FILTER and aggregate arguments, activation conditions,
#   keys and payloads, and threshold conditions calling a SQL function the
#   planner does not inline (SET search_path), a plpgsql function and a C
#   (internal) function: the aggregates equal their defining queries, the
#   activations fired once per matching event (batched and immediate), the
#   thresholds once per group that rose;
# - the worker never crashed (no "terminated by signal" in the log, the same
#   worker pid throughout);
# - expressions run as the owner: a payload calling current_user shows the
#   activation's owner, not the worker's superuser nor a superuser producer;
# - notify => 'id' sends only the outbox id.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $node = StreamEventsTest::new_node('definition_functions');
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

# SET search_path keeps a SQL function from being inlined: it runs through
# fmgr_sql, which runs a query (needs an active snapshot).
sql(q{
CREATE FUNCTION pof_sql(u text, a text) RETURNS text IMMUTABLE
    LANGUAGE sql SET search_path = public AS $$ SELECT coalesce(u, a) $$;
CREATE FUNCTION pof_plpgsql(u text, a text) RETURNS text IMMUTABLE
    LANGUAGE plpgsql AS $$ BEGIN RETURN coalesce(u, a); END $$;
CREATE FUNCTION is_buy_sql(e text) RETURNS boolean IMMUTABLE
    LANGUAGE sql SET search_path = public AS $$ SELECT e = 'buy' $$;
CREATE FUNCTION is_buy_plpgsql(e text) RETURNS boolean IMMUTABLE
    LANGUAGE plpgsql AS $$ BEGIN RETURN e = 'buy'; END $$;
CREATE FUNCTION len_plpgsql(e text) RETURNS int IMMUTABLE
    LANGUAGE plpgsql AS $$ BEGIN RETURN length(e); END $$;
CREATE FUNCTION big_sql(n bigint) RETURNS boolean IMMUTABLE
    LANGUAGE sql SET search_path = public AS $$ SELECT n >= 3 $$;
CREATE FUNCTION big_plpgsql(n bigint) RETURNS boolean IMMUTABLE
    LANGUAGE plpgsql AS $$ BEGIN RETURN n >= 4; END $$;
-- C functions of the server, under our own names
CREATE FUNCTION c_md5(text) RETURNS text IMMUTABLE STRICT LANGUAGE internal AS 'md5_text';
CREATE FUNCTION c_upper(text) RETURNS text IMMUTABLE STRICT LANGUAGE internal AS 'upper';
-- who runs it (stable: allowed in activations, not in aggregates)
CREATE FUNCTION whoami_plpgsql() RETURNS text STABLE
    LANGUAGE plpgsql AS $$ BEGIN RETURN current_user; END $$;
});

my %query = (
	by_who_sql => q{
SELECT pof_sql(user_id, anonymous_id) AS who, count(*) AS n,
       sum(len_plpgsql(event_name)) AS chars,
       count(*) FILTER (WHERE is_buy_plpgsql(event_name)) AS buys
FROM clicks WHERE NOT is_buy_sql(coalesce(event_name, '')) OR user_id IS NOT NULL
GROUP BY 1},
	by_who_plpgsql => q{
SELECT pof_plpgsql(user_id, anonymous_id) AS who, c_upper(event_name) AS ev, count(*) AS n
FROM clicks GROUP BY 1, 2},
	by_hash_c => q{
SELECT c_md5(coalesce(user_id, '-')) AS h, stream.tumble(occurred_at, '1 hour') AS hour,
       count(*) AS n, max(c_upper(anonymous_id)) AS top
FROM clicks GROUP BY 1, 2});

sub oracle_equal
{
	my ($agg, $what) = @_;
	my $q = $query{$agg};
	my $missing = sql("SELECT count(*) FROM (($q) EXCEPT ALL TABLE $agg) d");
	my $extra = sql("SELECT count(*) FROM (TABLE $agg EXCEPT ALL ($q)) d");
	my $groups = sql("SELECT count(*) FROM $agg");
	is("$missing/$extra", '0/0',
		"$what: $agg equals its defining query both ways ($groups groups)");
}

sub insert_events
{
	my ($from, $to) = @_;
	sql(qq{INSERT INTO clicks (event_name, user_id, anonymous_id)
	       SELECT (ARRAY['buy','view','cart'])[1 + i % 3],
	              CASE WHEN i % 4 = 0 THEN NULL ELSE 'u' || (i % 7) END,
	              'a' || (i % 5)
	       FROM generate_series($from, $to) i});
}

# events before the aggregates: folded by the backfill (no snapshot of its
# own there, the backfill's transaction has one)
insert_events(1, 40);
sql("SELECT stream.create_aggregate('$_', \$q\$ $query{$_} \$q\$)") for sort keys %query;
sql(q{SELECT stream.flush(timeout => '60 s')});
oracle_equal($_, 'after backfill') for sort keys %query;
my $worker_pid = sql(q{SELECT pid FROM pg_stat_activity WHERE application_name = 'stream_events worker'});

# activations: batched (worker) and immediate (producer's commit)
sql(q{SELECT stream.on_event('buys_sql', 'clicks', 'is_buy_sql(event_name)',
        key => 'pof_sql(user_id, anonymous_id)',
        payload => $$jsonb_build_object('who', pof_plpgsql(user_id, anonymous_id),
                                        'h', c_md5(event_name), 'as', whoami_plpgsql())$$)});
sql(q{SELECT stream.on_event('buys_plpgsql', 'clicks', 'is_buy_plpgsql(event_name)',
        key => 'c_upper(pof_plpgsql(user_id, anonymous_id))')});
sql(q{SELECT stream.on_event('buys_now', 'clicks', 'is_buy_plpgsql(event_name)',
        key => 'pof_sql(user_id, anonymous_id)', delivery => 'immediate',
        payload => $$jsonb_build_object('who', c_upper(pof_plpgsql(user_id, anonymous_id)),
                                        'as', whoami_plpgsql())$$)});
sql(q{SELECT stream.on_threshold('many_sql', 'by_who_sql', 'big_sql(n)')});
sql(q{SELECT stream.on_threshold('many_plpgsql', 'by_who_plpgsql', 'big_plpgsql(n)',
        payload => $$jsonb_build_object('who', pof_plpgsql(who, ''), 'n', n)$$)});
sql(q{SELECT stream.flush(timeout => '60 s')});
my %initial = map {
	$_ => sql(qq{SELECT count(*) FROM stream.threshold_state s JOIN stream.activation_defs d USING (act_id)
	             WHERE d.name = '$_'})
} qw(many_sql many_plpgsql);

# events after the definitions, several transactions
insert_events(41 + 50 * ($_ - 1), 40 + 50 * $_) for 1 .. 4;
sql(q{SELECT stream.flush(timeout => '60 s')});
oracle_equal($_, 'after live events') for sort keys %query;

my $buys_after = sql(q{SELECT count(*) FROM clicks WHERE event_name = 'buy' AND received_at >
    (SELECT min(created_at) FROM stream.activation_defs)});
cmp_ok($buys_after, '>', 0, "there were buys after the activations ($buys_after)");
for my $act (qw(buys_sql buys_plpgsql buys_now))
{
	is(sql(qq{SELECT count(*) FROM stream.activations WHERE activation = '$act'}),
		$buys_after, "$act fired once per buy");
}
is(sql(q{SELECT count(*) FROM stream.activations a JOIN clicks c USING (event_id)
         WHERE a.activation = 'buys_sql'
           AND a.key = coalesce(c.user_id, c.anonymous_id)
           AND a.payload->>'who' = coalesce(c.user_id, c.anonymous_id)
           AND a.payload->>'h' = md5(c.event_name)}),
	$buys_after, 'SQL key, plpgsql and C payload are right for every firing');
is(sql(q{SELECT count(*) FROM stream.activations a JOIN clicks c USING (event_id)
         WHERE a.activation = 'buys_plpgsql' AND a.key = upper(coalesce(c.user_id, c.anonymous_id))}),
	$buys_after, 'C(plpgsql()) key is right for every firing');
is(sql(q{SELECT count(*) FROM stream.activations a JOIN clicks c USING (event_id)
         WHERE a.activation = 'buys_now' AND a.key = coalesce(c.user_id, c.anonymous_id)
           AND a.payload->>'who' = upper(coalesce(c.user_id, c.anonymous_id))}),
	$buys_after, 'immediate: key and payload are right for every firing');

# thresholds: each group whose count rose past the bound after the
# threshold's creation fired once (the counts only grow)
for my $t ([ 'many_sql', 'by_who_sql', 3 ], [ 'many_plpgsql', 'by_who_plpgsql', 4 ])
{
	my ($name, $agg, $bound) = @$t;
	my $q = $query{$agg};
	my $fired = sql(qq{SELECT count(*) FROM stream.activations WHERE activation = '$name'});
	cmp_ok($fired, '>', 0, "$name fired");
	is($fired + $initial{$name}, sql(qq{SELECT count(*) FROM ($q) g WHERE n >= $bound}),
		"$name fired once per group that rose past the bound");
	is(sql(qq{SELECT count(*) FROM stream.threshold_state s JOIN stream.activation_defs d USING (act_id)
	          WHERE d.name = '$name'}),
		sql(qq{SELECT count(*) FROM ($q) g WHERE n >= $bound}),
		"$name: every group above the bound is noted as above");
}
is(sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'many_plpgsql'
         AND payload->>'who' = key::jsonb->>0 AND (payload->>'n')::int >= 4}),
	sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'many_plpgsql'}),
	'threshold payload with a plpgsql function is the group');

# who the expressions ran as: the activation's owner (here the bootstrap
# superuser, which created them), for the worker and for the producer
my $owner = sql(q{SELECT owner::text FROM stream.activation_defs WHERE name = 'buys_sql'});
is(sql(q{SELECT string_agg(DISTINCT payload->>'as', ',') FROM stream.activations
         WHERE activation IN ('buys_sql', 'buys_now')}),
	$owner, "expressions ran as the activation's owner ($owner)");

# -- a non-superuser owner: a superuser producer does not lend its rights --
sql(q{CREATE ROLE alice LOGIN});
sql(q{GRANT CREATE ON SCHEMA public TO alice; GRANT USAGE ON SCHEMA stream TO alice});
my ($ok, $out, $err) = (0, '', '');
$ok = $node->psql('postgres', q{
SET ROLE alice;
SELECT stream.create_stream('alice_clicks');
CREATE FUNCTION alice_who() RETURNS text STABLE LANGUAGE plpgsql AS $$ BEGIN RETURN current_user; END $$;
SELECT stream.on_event('alice_now', 'alice_clicks', 'true', delivery => 'immediate',
    payload => $$jsonb_build_object('as', alice_who())$$);
SELECT stream.on_event('alice_batched', 'alice_clicks', 'true',
    payload => $$jsonb_build_object('as', alice_who())$$);
}, stdout => \$out, stderr => \$err, on_error_stop => 1);
SKIP:
{
	skip "alice could not define her stream and activations: $err", 2 if $ok != 0;
	sql(q{SELECT stream.flush(timeout => '60 s')});
	# the producer is the superuser
	sql(q{INSERT INTO alice_clicks (event_name, user_id) VALUES ('x', 'p1'), ('y', 'p2')});
	sql(q{SELECT stream.flush(timeout => '60 s')});
	is(sql(q{SELECT string_agg(payload->>'as', ',' ORDER BY id) FROM stream.activations
	         WHERE activation = 'alice_now'}),
		'alice,alice', "immediate: a superuser producer runs alice's expressions as alice");
	is(sql(q{SELECT string_agg(payload->>'as', ',' ORDER BY id) FROM stream.activations
	         WHERE activation = 'alice_batched'}),
		'alice,alice', "worker: alice's expressions run as alice");

	# a function alice may not EXECUTE: refused when she defines it
	sql(q{CREATE FUNCTION su_only(t text) RETURNS boolean IMMUTABLE LANGUAGE sql
	      SET search_path = public AS $$ SELECT t IS NOT NULL $$;
	      REVOKE EXECUTE ON FUNCTION su_only(text) FROM PUBLIC});
	for my $def (
		q{SELECT stream.create_aggregate('alice_su', $q$ SELECT event_name, count(*) FROM alice_clicks WHERE su_only(user_id) GROUP BY 1 $q$)},
		q{SELECT stream.on_event('alice_su', 'alice_clicks', 'su_only(user_id)')})
	{
		my ($rc, undef, $e) = $node->psql('postgres', "SET ROLE alice; $def");
		like($e, qr/permission denied for function su_only/,
			'a definition calling a function its owner may not EXECUTE is refused');
	}

	# bob reads alice's stream by a grant; once revoked, his activations
	# stop (the compiled definitions stay loaded: checked at every firing)
	sql(q{CREATE ROLE bob LOGIN; GRANT USAGE ON SCHEMA stream TO bob});
	sql(q{SET ROLE alice; GRANT SELECT ON alice_clicks TO bob});
	my ($bok, $bout, $berr) = $node->psql('postgres', q{
SET ROLE bob;
SELECT stream.on_event('bob_batched', 'alice_clicks', 'true', notify => 'id');
SELECT stream.on_event('bob_now', 'alice_clicks', 'true', notify => 'id', delivery => 'immediate');
}, on_error_stop => 1);
	SKIP:
	{
		skip "bob could not define activations on alice's stream: $berr", 2 if $bok != 0;
		sql(q{SELECT stream.flush(timeout => '60 s')});
		sql(q{INSERT INTO alice_clicks (event_name, user_id) VALUES ('x', 'p3')});
		sql(q{SELECT stream.flush(timeout => '60 s')});
		sql(q{SET ROLE alice; REVOKE SELECT ON alice_clicks FROM bob});
		sql(q{INSERT INTO alice_clicks (event_name, user_id) VALUES ('x', 'p4')});
		sql(q{SELECT stream.flush(timeout => '60 s')});
		is(sql(q{SELECT activation || ':' || count(*) FROM stream.activations
		         WHERE activation LIKE 'bob%' GROUP BY activation ORDER BY activation}),
			"bob_batched:1\nbob_now:1", 'bob\'s activations fired while he could read the stream, not after the REVOKE');
		is(sql(q{SELECT count(*) FROM stream.activations WHERE activation LIKE 'alice%'}),
			'8', "alice's activations went on (4 events, 2 activations)");
	}
}

# -- notify => 'id' ----------------------------------------------------------
my $has_notify = sql(q{SELECT count(*) FROM pg_attribute
                       WHERE attrelid = 'stream.activation_defs'::regclass AND attname = 'notify'});
SKIP:
{
	skip 'stream.activation_defs has no notify column yet', 3 unless $has_notify;
	sql(q{SELECT stream.on_event('ids_only', 'clicks', $$event_name = 'ping'$$,
	        notify => 'id', channel => 'pings')});
	sql(q{SELECT stream.on_event('ids_now', 'clicks', $$event_name = 'ping'$$,
	        notify => 'id', channel => 'pings_now', delivery => 'immediate')});
	sql(q{SELECT stream.on_absence('ids_absent', 'clicks', started_by => $$event_name = 'ping'$$,
	        cancelled_by => $$event_name = 'pong'$$, within => '1 second', key => 'user_id',
	        notify => 'id', channel => 'pings_absent')});
	sql(q{SELECT stream.flush(timeout => '60 s')});
	my $listener = StreamEventsTest::listener($node, undef, 'pings', 'pings_now', 'pings_absent');
	sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('ping', 'secret_user')});
	sql(q{SELECT stream.flush(timeout => '60 s')});
	# the absence timer runs out a second later
	for (1 .. 100)
	{
		last if sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'ids_absent'}) eq '1';
		usleep(100_000);
	}
	my @notes = StreamEventsTest::notifications($listener, 'pings(?:_now|_absent)?');
	StreamEventsTest::close_listener($listener);
	is(scalar(@notes), 3, 'the three id-only activations notified (an absence timer too)');
	is(scalar(grep { /^\{"id": \d+\}$/ } @notes), 3,
		'NOTIFY payloads are {"id": n} only') or diag(join("\n", @notes));
}

# -- a definition that fails is parked; the others go on ----------------------
sql(q{CREATE TABLE fragile (bad text);
CREATE FUNCTION fragile_key(u text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN IF u = 'poison' THEN RAISE EXCEPTION 'poisoned key'; END IF; RETURN u; END $$;
CREATE FUNCTION fragile_cond(u text) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN IF u = 'poison' THEN RAISE EXCEPTION 'poisoned condition'; END IF; RETURN true; END $$;});
$query{fragile_agg} = q{SELECT fragile_key(user_id) AS u, count(*) AS n FROM clicks GROUP BY 1};
sql(qq{SELECT stream.create_aggregate('fragile_agg', \$q\$ $query{fragile_agg} \$q\$, on_error => 'stop')});
sql(q{SELECT stream.on_event('fragile_act', 'clicks', 'fragile_cond(user_id)', notify => 'id', on_error => 'stop')});
# a write from an immutable function (through a volatile one) while decoding
sql(q{CREATE FUNCTION log_v(t text) RETURNS void LANGUAGE sql AS $$ INSERT INTO fragile VALUES (t) $$;
CREATE FUNCTION log_b(t text) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN PERFORM log_v(t); RETURN true; END $$;
SELECT stream.on_event('writer_act', 'clicks', 'log_b(user_id)', notify => 'id');});
sql(q{SELECT stream.flush('fragile_agg', timeout => '60 s')});
my $buys_before = sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'buys_sql'});
sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('buy', 'poison'), ('buy', 'fine')});
sql(q{SELECT stream.flush('by_who_sql', timeout => '60 s')});
oracle_equal('by_who_sql', 'while another definition fails');
is(wait_for(q{SELECT count(*) FROM stream.activations WHERE activation = 'buys_sql'}, $buys_before + 2),
	$buys_before + 2, 'activations go on while another definition fails');
is(wait_for(q{SELECT status FROM stream.aggregate_defs WHERE view = 'fragile_agg'::regclass}, 'error'),
	'error', 'the failing aggregate is parked (status error)');
like(sql(q{SELECT last_error FROM stream.aggregate_defs WHERE view = 'fragile_agg'::regclass}),
	qr/poisoned key/, 'its last_error says why');
my $log_now = slurp_file($node->logfile);
like($log_now, qr/parked activation fragile_act after its error: poisoned condition/,
	'an activation whose condition fails is parked');
like($log_now, qr/parked activation writer_act after its error: activation writer_act wrote to the database/,
	'an activation that writes while decoding is parked');
is(sql(q{SELECT count(*) FROM fragile}), '0', 'nothing it wrote stayed');
# fixed and rebuilt: equal to its defining query again
sql(q{CREATE OR REPLACE FUNCTION fragile_key(u text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RETURN u; END $$});
sql(q{SELECT stream.rebuild_aggregate('fragile_agg')});
sql(q{SELECT stream.flush('fragile_agg', timeout => '60 s')});
oracle_equal('fragile_agg', 'fixed and rebuilt');
# the parked activations dropped: nothing holds anyone back
sql(q{SELECT stream.drop_activation('fragile_act')});
sql(q{SELECT stream.drop_activation('writer_act')});
sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('buy', 'after')});
sql(q{SELECT stream.flush(timeout => '60 s')});
oracle_equal($_, 'after the parked definitions are gone') for qw(by_who_sql fragile_agg);

# -- the worker never crashed ------------------------------------------------
sql(q{SELECT stream.flush('by_who_sql', timeout => '60 s')});
is(sql(q{SELECT pid FROM pg_stat_activity WHERE application_name = 'stream_events worker'}),
	$worker_pid, 'the same worker ran throughout');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'no process was terminated by a signal');
is(sql(q{SELECT count(*) FROM stream.aggregates WHERE state <> 'running'}), '0',
	'every aggregate is running');
my @crashes = ($log =~ /(server process .* was terminated|terminating any other active server processes)/g);
is(scalar(@crashes), 0, 'no restart of the cluster');

$node->stop;
done_testing();
