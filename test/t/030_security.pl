# The trust boundary (issue 12): no role gains another role's rights, or
# reads another role's events, through stream_events.
#
# Roles: alice (owner of the streams clicks, orders, pubfeed), bob (owner of
# a private stream bob_private, its aggregate and activations), pat
# (producer: INSERT on clicks and orders only), carl (consumer, granted bob's
# channel), mallory (outsider, owns m_stream).  The superuser owns a canary
# table, a victim table and a loot table; the attack functions (evil_<role>,
# SECURITY INVOKER, called through IMMUTABLE wrappers) try to escalate
# (ALTER ROLE ... SUPERUSER), write and delete canary rows, empty and drop
# the victim, SET ROLE bob and read bob's stream into loot.  sec_state()
# shows all of that in one line; it must stay clean after every attack.
#
# Classes, in this order: 1 user code runs as its owner, restricted (group
# keys, folded constants, conditions/keys/payloads, absence, thresholds,
# triggers during maintenance moves, immediate activations in a superuser's
# transaction, user-defined aggregates); 3 delivery (NOTIFY id mode,
# channels, consumers, hidden outbox/timer/threshold rows, owner-only
# operations); 4 views; 5 exactly-once holes (forged "move" messages,
# partitions created mid-transaction, DROP DATABASE by a non-owner);
# 6 enforcement (SUSET settings, owners and producers without hidden
# grants); 8 hostile names; 2 forged catalog rows (each with what it would
# have done); 7 internal functions and the _priv door; then what could crash
# or stop the worker: forged partial states and query trees, definitions of
# one role that fail (they must not stop the others), and 1j an operator
# planted later in a schema of another role's search_path.  Every refusal
# asserts its SQLSTATE; every attack has a positive check that it was
# really evaluated; negative controls show that the checks can fail.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use StreamEventsTest;
use SecurityTest;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $node = StreamEventsTest::new_node('security');
$node->start;
my $t = SecurityTest->new($node);
$t->mark_log;

my @roles = qw(alice bob pat carl mallory);
my $CLEAN = 'canary=1,2,3 victim=true supers= loot=';

# ---------------------------------------------------------------- helpers
sub su { return $node->safe_psql($_[1] // 'postgres', $_[0]); }

sub sec_state { return $t->query('postgres', 'SELECT sec.sec_state()') // 'sec_state failed'; }

# Back to a clean state after an attack, so that each attack is judged alone.
sub reset_state
{
	su(join('', map { "ALTER ROLE $_ NOSUPERUSER; " } @roles) . q{
DROP TABLE IF EXISTS public.canary;
CREATE TABLE public.canary (id int, tag text);
INSERT INTO public.canary VALUES (1, NULL), (2, NULL), (3, NULL);
DROP TABLE IF EXISTS public.victim;
CREATE TABLE public.victim (x int);
INSERT INTO public.victim VALUES (1);
TRUNCATE public.loot;});
}

# Waits for the worker to apply every definition (errors are only noted:
# an attack may leave a definition in error; the checks say what matters).
sub flush
{
	my ($db, $timeout) = @_;
	$timeout //= '10 s';
	my ($ret, $out, $err) = $t->run('postgres', "SELECT stream.flush(timeout => '$timeout')", $db);
	note("stream.flush: " . SecurityTest::first_error($err)) if $ret != 0;
	return $ret == 0;
}

# Waits (bounded) until $sql returns $want; returns whether it did.
sub wait_for
{
	my ($sql, $want, $db, $seconds) = @_;
	$seconds //= 30;
	for (my $i = 0; $i < $seconds * 5; $i++)
	{
		my $got = $t->query('postgres', $sql, $db);
		return 1 if defined $got && $got eq $want;
		usleep(200_000);
	}
	return 0;
}

sub attack_ok
{
	my ($name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $state = sec_state();
	my $ok = is($state, $CLEAN, "$name: no effect (canary intact, victim kept, no new superuser, nothing of bob's read)");
	reset_state();
	return $ok;
}

my $oracle_q = q{SELECT stream.tumble(occurred_at, '1 day') AS day, event_name, count(*) AS events FROM public.clicks GROUP BY 1, 2};

sub oracle_diff
{
	my ($view, $q) = @_;
	return $t->query('postgres',
		"SELECT (SELECT count(*) FROM (($q) EXCEPT ALL TABLE $view) d) || '/' || "
		  . "(SELECT count(*) FROM (TABLE $view EXCEPT ALL ($q)) d)") // 'query failed';
}

# Counts rows of a catalog/view visible to a role; 'denied' if it may not read it at all.
sub visible
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $t->run($role, $sql);
	return $out if $ret == 0;
	return 'denied' if SecurityTest::sqlstate($err) eq '42501';
	return 'error ' . SecurityTest::first_error($err);
}

sub none_visible
{
	my ($role, $sql, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $got = visible($role, $sql);
	ok($got eq '0' || $got eq 'denied', $name) or diag("as $role: $sql -> $got");
}

# A fast shutdown must end every process (the workers react to SIGTERM);
# if it does not, say which processes were left, then stop immediately.
sub fast_stop
{
	my ($when) = @_;
	my $pid = $node->{_pid};
	local $ENV{PGCTLTIMEOUT} = 30;
	my $ok = $node->stop('fast', fail_ok => 1);
	if (!ok($ok, "$when: the server stops on a fast shutdown (every worker ends on SIGTERM)"))
	{
		my $ps = `ps --ppid $pid -o pid,stat,wchan:32,args 2>&1`;
		diag($ps);
		# where the processes left hang (diagnostics only)
		for my $child ($ps =~ /^\s*(\d+)\s.*stream_events/mg)
		{
			diag(`gdb -p $child -batch -ex bt 2>/dev/null | grep '^#' | head -25`) if -x '/usr/bin/gdb';
		}
	}
	$node->stop('immediate') unless $ok;
}

# ---------------------------------------------------------------- setup
su(q{
CREATE EXTENSION stream_events;
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE pat LOGIN;
CREATE ROLE carl LOGIN; CREATE ROLE mallory LOGIN; CREATE ROLE ctl_role;
GRANT USAGE ON SCHEMA stream TO alice, bob, pat, carl, mallory;
GRANT CREATE ON SCHEMA public TO alice, bob, mallory;
CREATE TABLE public.canary (id int, tag text);
INSERT INTO public.canary VALUES (1, NULL), (2, NULL), (3, NULL);
CREATE TABLE public.victim (x int);
INSERT INTO public.victim VALUES (1);
CREATE TABLE public.loot (tag text, n bigint);
GRANT INSERT ON public.loot TO PUBLIC;
CREATE SCHEMA sec;
CREATE FUNCTION sec.sec_state(canary text DEFAULT 'public.canary') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE c text; v boolean := to_regclass('public.victim') IS NOT NULL;
BEGIN
    IF v THEN
        EXECUTE 'SELECT count(*) = 1 FROM public.victim' INTO v;
    END IF;
    IF to_regclass(canary) IS NULL THEN
        c := 'missing';
    ELSE
        EXECUTE format('SELECT coalesce(string_agg(CASE WHEN tag IS NULL THEN id::text ELSE id || '':'' || tag END, '','' ORDER BY id, tag), ''empty'') FROM %s', canary) INTO c;
    END IF;
    RETURN 'canary=' || c
        || ' victim=' || v
        || ' supers=' || coalesce((SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles
                                   WHERE rolsuper AND rolname <> current_user), '')
        || ' loot=' || coalesce((SELECT string_agg(DISTINCT tag, ',') FROM public.loot), '');
END $$;
-- a function only the superuser may execute (EXECUTE checks must be the owner's)
CREATE TABLE sec.su_only_calls (tag text);
CREATE FUNCTION sec.su_only_v(t text) RETURNS void LANGUAGE sql AS $$ INSERT INTO sec.su_only_calls VALUES (t) $$;
CREATE FUNCTION public.su_only(t text) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN PERFORM sec.su_only_v(t); RETURN true; END $$;
REVOKE EXECUTE ON FUNCTION public.su_only(text) FROM PUBLIC;
});

# The attack functions, created by the attacker itself (SECURITY INVOKER):
# whoever runs them tries everything; they never fail (errors are swallowed),
# so a definition that calls them keeps working once the worker runs it as
# its owner, restricted.
sub evil_sql
{
	my ($r) = @_;
	return qq{
CREATE FUNCTION public.evil_${r}_v(tag text) RETURNS void LANGUAGE plpgsql AS \$f\$
BEGIN
    BEGIN EXECUTE 'ALTER ROLE $r SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN INSERT INTO public.canary VALUES (666, tag); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN DELETE FROM public.canary WHERE id = 1; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN DELETE FROM public.victim; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN DROP TABLE public.victim; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN INSERT INTO public.loot SELECT tag, count(*) FROM public.bob_private; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN
        SET ROLE bob;
        INSERT INTO public.loot SELECT tag || ' (as bob)', count(*) FROM public.bob_private;
        RESET ROLE;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END \$f\$;
CREATE FUNCTION public.evil_${r}(tag text, v text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS \$f\$
BEGIN PERFORM public.evil_${r}_v(tag); RETURN v; END \$f\$;
CREATE FUNCTION public.evil_${r}_b(tag text) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS \$f\$
BEGIN PERFORM public.evil_${r}_v(tag); RETURN true; END \$f\$;
};
}

$t->succeeds('alice', q{SELECT stream.create_stream('clicks'); GRANT INSERT ON public.clicks TO pat;}
	  . evil_sql('alice'), 'setup: alice creates clicks (pat may INSERT) and her functions');
$t->succeeds('bob',
	q{SELECT stream.create_stream('bob_private');
	  INSERT INTO public.bob_private (event_name, user_id, properties)
	  VALUES ('bob_secret', 'b1', '{"ssn": "123-45-6789"}');},
	'setup: bob creates his private stream');
$t->succeeds('mallory', q{SELECT stream.create_stream('m_stream');} . evil_sql('mallory'),
	'setup: mallory creates m_stream and her functions');
$t->succeeds('alice',
	"SELECT stream.create_aggregate('clicks_daily', \$q\$ $oracle_q \$q\$);
	 INSERT INTO public.clicks (event_name, user_id) VALUES ('view', 'u1'), ('buy', 'u2');",
	'setup: alice\'s honest aggregate clicks_daily');
flush();
is(oracle_diff('clicks_daily', $oracle_q), '0/0', 'setup: clicks_daily equals its defining query');

# ---------------------------------------------------------------- negative controls (shared checks)
is(sec_state(), $CLEAN, 'control: the clean state');
{
	# the attack functions are potent when the superuser runs them
	my $out = su(q{BEGIN;
SELECT public.evil_mallory_b('control');
SELECT sec.sec_state();
ROLLBACK;});
	like($out, qr/canary=2,3,666:control victim=false supers=mallory loot=control,control \(as bob\)/,
		'control: evil_mallory run by the superuser escalates, writes, deletes, drops, reads bob\'s stream');
	# the canary check sees a drop and a write (scratch copies)
	su(q{CREATE TABLE public.canary_ctl AS TABLE public.canary;});
	is(su(q{SELECT sec.sec_state('public.canary_ctl')}), $CLEAN, 'control: scratch canary starts clean');
	su(q{INSERT INTO public.canary_ctl VALUES (7, 'x')});
	isnt(su(q{SELECT sec.sec_state('public.canary_ctl')}), $CLEAN, 'control: the canary check sees a written row');
	su(q{DROP TABLE public.canary_ctl});
	like(su(q{SELECT sec.sec_state('public.canary_ctl')}), qr/^canary=missing/, 'control: the canary check sees a dropped canary');
	su(q{ALTER ROLE ctl_role SUPERUSER});
	like(sec_state(), qr/supers=ctl_role/, 'control: the superuser check sees a new superuser');
	su(q{ALTER ROLE ctl_role NOSUPERUSER});
	is(sec_state(), $CLEAN, 'control: clean again');
}

# ================================================================ 1. user code as superuser
note('--- 1. user code runs as its owner, restricted, never as the superuser');

# 1a. group key evaluated per row by the worker (backfill and apply)
$t->succeeds('mallory', q{
INSERT INTO public.m_stream (event_name, user_id) VALUES ('e', 'u1'), ('e', 'u2');
SELECT stream.create_aggregate('m_agg1', $q$ SELECT public.evil_mallory('1a group key', event_name) AS k, count(*) AS n FROM public.m_stream GROUP BY 1 $q$);
INSERT INTO public.m_stream (event_name, user_id) VALUES ('e', 'u3');},
	'1a: mallory defines an aggregate whose group key calls her function');
flush();
is($t->query('postgres', 'SELECT n FROM public.m_agg1'), '3', '1a: the worker evaluated it (backfill + apply)');
attack_ok('1a group key');
$t->run('mallory', q{SELECT stream.drop_aggregate('m_agg1')});

# 1b. IMMUTABLE call with constant arguments: folded by expression_planner
$t->succeeds('mallory',
	q{SELECT stream.create_aggregate('m_agg2', $q$ SELECT event_name, count(*) AS n FROM public.m_stream WHERE public.evil_mallory_b('1b folded constant') GROUP BY 1 $q$);
	  INSERT INTO public.m_stream (event_name, user_id) VALUES ('e', 'u4');},
	'1b: mallory defines an aggregate with an IMMUTABLE call on constants');
flush();
is($t->query('postgres', q{SELECT n FROM public.m_agg2 WHERE event_name = 'e'}), '4', '1b: the worker applied it');
attack_ok('1b constant-folded immutable call');
$t->run('mallory', q{SELECT stream.drop_aggregate('m_agg2')});

# 1c. activation condition, key and payload (batched: the worker)
$t->succeeds('alice', q{
SELECT stream.on_event('a_evil', 'clicks',
    $c$ public.evil_alice_b('1c condition') AND event_name = 'evil1c' $c$,
    channel => 'a_evil',
    key => $c$ public.evil_alice('1c key', user_id) $c$,
    payload => $c$ jsonb_build_object('u', public.evil_alice('1c payload', user_id)) $c$);},
	'1c: alice defines an activation whose condition, key and payload call her function');
$t->run('alice', q{INSERT INTO public.clicks (event_name, user_id) VALUES ('evil1c', 'u1')});
flush();
is($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation = 'a_evil'}), '1',
	'1c: the worker fired it');
attack_ok('1c activation condition/key/payload');
$t->run('alice', q{SELECT stream.drop_activation('a_evil')});

# 1d. absence timers: started_by, cancelled_by
$t->succeeds('alice', q{
SELECT stream.on_absence('a_abs', 'clicks',
    started_by => $c$ public.evil_alice_b('1d started_by') AND event_name = 'evil1d' $c$,
    cancelled_by => $c$ public.evil_alice_b('1d cancelled_by') AND event_name = 'never' $c$,
    within => '1 hour', key => 'user_id');},
	'1d: alice defines an absence activation calling her function');
$t->run('alice', q{INSERT INTO public.clicks (event_name, user_id) VALUES ('evil1d', 'u1')});
flush();
is($t->query('postgres',
	q{SELECT count(*) FROM stream.absence_timers t JOIN stream.activation_defs d USING (act_id) WHERE d.name = 'a_abs'}),
	'1', '1d: the worker opened the timer');
attack_ok('1d absence started_by/cancelled_by');
$t->run('alice', q{SELECT stream.drop_activation('a_abs')});

# 1e. threshold condition over an aggregate
$t->succeeds('mallory', q{
SELECT stream.create_aggregate('m_agg2h', $q$ SELECT event_name, count(*) AS n FROM public.m_stream GROUP BY 1 $q$);
SELECT stream.on_threshold('m_thr', 'm_agg2h', $c$ public.evil_mallory_b('1e threshold') AND n > 0 $c$);},
	'1e: mallory defines a threshold calling her function');
flush();
$t->run('mallory', q{INSERT INTO public.m_stream (event_name, user_id) VALUES ('new_group', 'u1')});
flush();
cmp_ok($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation = 'm_thr'}) // 0, '>=', 1,
	'1e: the threshold fired for the new group');
attack_ok('1e threshold condition');
$t->run('mallory', q{SELECT stream.drop_activation('m_thr'); SELECT stream.drop_aggregate('m_agg2h');});

# 1f. a row trigger of the owner fires while maintenance moves rows out of the default partition
$t->succeeds('alice', q{
CREATE FUNCTION public.alice_trig() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.evil_alice_v('1f ' || TG_OP || ' trigger'); RETURN NULL; END $f$;
CREATE TRIGGER alice_t AFTER INSERT OR DELETE ON public.clicks FOR EACH ROW EXECUTE FUNCTION public.alice_trig();
INSERT INTO public.clicks (event_name, user_id, occurred_at) VALUES ('old', 'u1', now() - interval '20 days');},
	'1f: alice puts a row trigger on clicks and inserts an event 20 days old (default partition)');
ok(wait_for(q{SELECT count(*) FROM ONLY public.clicks_default}, '0'),
	'1f: the worker moved the event out of the default partition');
attack_ok('1f trigger during the worker\'s move');
$t->run('alice', q{INSERT INTO public.clicks (event_name, user_id, occurred_at) VALUES ('old', 'u1', now() - interval '30 days')});
su(q{SELECT * FROM stream.maintain()});
is($t->query('postgres', q{SELECT count(*) FROM ONLY public.clicks_default}), '0',
	'1f: the superuser\'s stream.maintain() moved it');
attack_ok('1f trigger during a superuser\'s stream.maintain()');
$t->run('alice', q{DROP TRIGGER alice_t ON public.clicks});

# 1g. immediate activation: the superuser is the producer
$t->succeeds('alice', q{
SELECT stream.on_event('a_imm', 'clicks', $c$ public.evil_alice_b('1g immediate condition') AND event_name = 'imm' $c$,
                       channel => 'a_imm', delivery => 'immediate');},
	'1g: alice defines an immediate activation calling her function');
$t->succeeds('postgres', q{INSERT INTO public.clicks (event_name, user_id) VALUES ('imm', 'su')},
	'1g: the superuser inserts into clicks');
is($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation = 'a_imm'}), '1',
	'1g: the immediate activation fired in the superuser\'s transaction');
attack_ok('1g immediate activation in a superuser producer');
$t->run('alice', q{SELECT stream.drop_activation('a_imm')});

# 1i. a user-defined aggregate: its transition, combine and final functions
my ($r1i, undef, $e1i) = $t->run('mallory', q{
CREATE FUNCTION public.m_sfunc(s int, v int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.evil_mallory_v('1i sfunc'); RETURN coalesce(s, 0) + coalesce(v, 0); END $f$;
CREATE FUNCTION public.m_cfunc(a int, b int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.evil_mallory_v('1i combinefunc'); RETURN coalesce(a, 0) + coalesce(b, 0); END $f$;
CREATE FUNCTION public.m_ffunc(s int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.evil_mallory_v('1i finalfunc'); RETURN s; END $f$;
CREATE AGGREGATE public.m_sum(int) (sfunc = public.m_sfunc, stype = int, combinefunc = public.m_cfunc,
                                    finalfunc = public.m_ffunc, initcond = '0');
SELECT stream.create_aggregate('m_agg_udf', $q$ SELECT event_name, public.m_sum(1) AS n FROM public.m_stream GROUP BY 1 $q$);
INSERT INTO public.m_stream (event_name, user_id) VALUES ('e', 'u5');});
if ($r1i == 0)
{
	flush();
	is($t->query('mallory', q{SELECT n FROM public.m_agg_udf WHERE event_name = 'e'}), '5',
		'1i: the worker applied mallory\'s user-defined aggregate');
	attack_ok('1i user-defined aggregate (sfunc, combinefunc)');
	$t->run('mallory', q{SELECT stream.drop_aggregate('m_agg_udf')});
}
else
{
	pass('1i: a user-defined aggregate is refused: ' . SecurityTest::first_error($e1i));
	reset_state();
}

# the worker keeps working
$t->run('alice', q{INSERT INTO public.clicks (event_name, user_id) SELECT 'after_attacks', 'u' || i FROM generate_series(1, 5) i});
ok(flush(), 'after class 1: stream.flush succeeds');
is(oracle_diff('clicks_daily', $oracle_q), '0/0', 'after class 1: clicks_daily still equals its defining query');
reset_state();

# ================================================================ 3. delivery tied to identity
note('--- 3. delivery: channels, consumers, outbox rows, NOTIFY');
$t->succeeds('bob', q{
SELECT stream.on_event('bob_act', 'bob_private', $c$ event_name = 'bob_secret' $c$, channel => 'bob_ch');},
	'3: bob defines an activation on his private stream (notify defaults to id)');
$t->succeeds('bob', q{
SELECT stream.on_event('bob_vip', 'bob_private', $c$ (properties->>'price')::numeric >= 100 $c$, channel => 'bob_ch');},
	'3: bob defines a second activation on his channel');
$t->succeeds('bob', q{
SELECT stream.on_absence('bob_abs', 'bob_private', started_by => $c$ event_name = 'bob_secret' $c$,
                         cancelled_by => $c$ event_name = 'bob_done' $c$, within => '1 day', key => 'user_id');
SELECT stream.create_aggregate('bob_agg', $q$ SELECT event_name, count(*) AS n FROM public.bob_private GROUP BY 1 $q$);
SELECT stream.on_threshold('bob_thr', 'bob_agg', $c$ n > 0 $c$);},
	'3: bob defines an absence activation, an aggregate and a threshold');
$t->succeeds('bob', q{SELECT stream.define_contract('bob_private', 'bob_secret', '{"type": "object"}')},
	'6: a non-superuser owner (bob) defines a contract');
$t->succeeds('alice', q{
SELECT stream.create_stream('pubfeed');
GRANT SELECT ON public.pubfeed TO PUBLIC;},
	'3: alice creates pubfeed, readable by PUBLIC');
# 'full' for the control; without the notify argument where it does not exist yet
my ($r_full, undef, $e_full) = $t->run('alice',
	q{SELECT stream.on_event('pub_act', 'pubfeed', 'true', channel => 'pub_ch', notify => 'full')});
if ($r_full != 0)
{
	note('on_event(notify => full): ' . SecurityTest::first_error($e_full));
	$t->run('alice', q{SELECT stream.on_event('pub_act', 'pubfeed', 'true', channel => 'pub_ch')});
}
flush();
my $listener = StreamEventsTest::listener($node, 'mallory', 'bob_ch', 'pub_ch', 'bob_thr');
$t->run('bob', q{
INSERT INTO public.bob_private (event_name, user_id, properties)
VALUES ('bob_secret', 'b2', '{"ssn": "987-65-4321"}'), ('bob_secret', 'b3', '{"ssn": "555-55-5555"}'),
       ('bob_newgroup', 'b9', '{}');});
$t->run('alice', q{INSERT INTO public.pubfeed (event_name, user_id) VALUES ('pub', 'pub_user')});
flush();
my @bob_notes = StreamEventsTest::notifications($listener, 'bob_ch');
my @pub_notes = StreamEventsTest::notifications($listener, 'pub_ch');
my @thr_notes = StreamEventsTest::notifications($listener, 'bob_thr');
StreamEventsTest::close_listener($listener);
cmp_ok(scalar(@bob_notes), '>=', 2, '3: mallory, LISTENing, receives the NOTIFYs of bob\'s channel');
is(scalar(grep { !/^\{"id": ?\d+\}$/ } @bob_notes), 0,
	'3: in notify id mode they carry only {"id": N}') or diag(join("\n", @bob_notes));
ok(!(grep { /ssn|bob_secret|b2/ } @bob_notes), '3: no payload of bob\'s events reaches mallory by NOTIFY');
cmp_ok(scalar(@thr_notes), '>=', 1, '3: mallory receives the NOTIFY of bob\'s threshold (a new group rose)');
is(scalar(grep { !/^\{"id": ?\d+\}$/ } @thr_notes), 0,
	'3: it carries only {"id": N} (PUBLIC cannot read bob\'s aggregate)') or diag(join("\n", @thr_notes));
ok((grep { /pub_user/ } @pub_notes), '3 control: in full mode the NOTIFY carries the payload')
  or diag(join("\n", @pub_notes));

# definitions over what mallory cannot read
$t->refused('mallory', q{SELECT stream.on_event('m_read', 'bob_private', 'true')}, '42501',
	'3: mallory cannot define an activation on bob\'s stream');
# (refused as forbidden, or as not there for her: either way nothing of bob's is revealed)
like($t->refused_any('mallory', q{SELECT stream.create_aggregate('m_read', $q$ SELECT event_name, count(*) FROM public.bob_private GROUP BY 1 $q$)},
	'3: mallory cannot define an aggregate over bob\'s stream'), qr/^(42501|42809)$/, '3: ... 42501 or "not a stream"');
like($t->refused_any('mallory', q{SELECT stream.on_threshold('m_read', 'bob_agg', 'n > 0')},
	'3: mallory cannot define a threshold on bob\'s aggregate'), qr/^(42501|42704)$/, '3: ... 42501 or "does not exist"');

# consumers
$t->refused('mallory', q{SELECT stream.grant_channel('bob_ch', 'mallory')}, '42501',
	'3: grant_channel by a non-owner: 42501');
$t->succeeds('bob', q{SELECT stream.grant_channel('bob_ch', 'carl')}, '3: bob grants his channel to carl');
my $carl_rows = $t->succeeds('carl', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM stream.consume('carl_c', 'bob_ch', 10)},
	'3: carl consumes bob\'s channel as consumer carl_c');
my @carl_ids = split /,/, ($carl_rows // '');
cmp_ok(scalar(@carl_ids), '>=', 2, '3: carl receives bob\'s activations (b2, b3)');
my $last = $carl_ids[-1] // 0;
$t->refused('mallory', qq{SELECT * FROM stream.consume('carl_c', 'bob_ch', 10)}, '42501',
	'3: mallory cannot consume with carl\'s consumer name');
$t->refused('mallory', qq{SELECT stream.ack('carl_c', $last)}, '42501',
	'3: mallory cannot ack for carl\'s consumer name');
$t->refused('mallory', q{SELECT * FROM stream.consume('mallory_c', 'bob_ch', 10)}, '42501',
	'3: mallory cannot consume a channel she was not granted');
$t->refused('mallory', q{SELECT * FROM stream.consume('mallory_c2', 'bob_abs', 10)}, '42501',
	'3: mallory cannot consume bob\'s absence channel');
$t->succeeds('carl', qq{SELECT stream.ack('carl_c', $last)}, '3: carl acks');
is($t->query('carl', q{SELECT count(*) FROM stream.consume('carl_c', 'bob_ch', 10)}), '0',
	'3: after the ack carl has nothing pending');
$t->refused('mallory', q{SELECT stream.on_event('m_inject', 'm_stream', 'true', channel => 'bob_ch')}, '42501',
	'3: mallory cannot define an activation on bob\'s channel (inject into it)');

# revoke
$t->succeeds('bob', q{SELECT stream.revoke_channel('bob_ch', 'carl')}, '3: bob revokes carl\'s grant');
$t->refused('carl', q{SELECT * FROM stream.consume('carl_c', 'bob_ch', 10)}, '42501', '3: after the revoke carl cannot consume');
$t->succeeds('bob', q{SELECT stream.grant_channel('bob_ch', 'carl')}, '3: bob grants it again');

# what only bob may do with his objects (refused as forbidden, or as not there for mallory)
my %owner_only = (
	'ingest into bob\'s stream' => q{SELECT * FROM stream.ingest('public.bob_private', '[{"event_name": "m_fake"}]')},
	'define_contract on bob\'s stream' => q{SELECT stream.define_contract('public.bob_private', 'bob_secret', '{"required": ["never"]}', 'none')},
	'set_policy on bob\'s stream' => q{SELECT stream.set_policy('public.bob_private', on_violation => 'reject', on_unplanned => 'reject')},
	'replay_quarantine of bob\'s stream' => q{SELECT stream.replay_quarantine('public.bob_private')},
	'drop_stream of bob\'s stream' => q{SELECT stream.drop_stream('public.bob_private')},
	'drop_aggregate of bob\'s aggregate' => q{SELECT stream.drop_aggregate('bob_agg')},
	'rebuild_aggregate of bob\'s aggregate' => q{SELECT stream.rebuild_aggregate('bob_agg')},
	'drop_activation of bob\'s activation' => q{SELECT stream.drop_activation('bob_act')},
	'revoke_channel on bob\'s channel' => q{SELECT stream.revoke_channel('bob_ch', 'carl')},
	'contract_diff against bob\'s contract' => q{SELECT * FROM stream.contract_diff('public.bob_private', 'bob_secret', '{}')},
);
for my $what (sort keys %owner_only)
{
	my $st = $t->refused_any('mallory', $owner_only{$what}, "3: mallory: $what is refused");
	like($st, qr/^(42501|42704|42809|42P01)$/, "3: ... as forbidden or not visible ($what: $st)");
}
is($t->query('postgres', q{SELECT count(*) FROM public.bob_private WHERE event_name = 'm_fake'}), '0', '3: nothing of mallory\'s in bob\'s stream');
is($t->query('postgres', q{SELECT count(*) FROM stream.activation_defs WHERE name IN ('bob_act', 'bob_abs', 'bob_thr')}), '3', '3: bob\'s activations are all there');
is($t->query('carl', q{SELECT count(*) FROM stream.consume('carl_c', 'bob_ch', 10)}), '0', '3: carl\'s grant survived mallory\'s revoke');

# outbox, timers, threshold state of others
cmp_ok($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE channel IN ('bob_ch', 'bob_abs', 'bob_thr')}) // 0,
	'>=', 2, '3 control: bob\'s outbox rows exist');
cmp_ok($t->query('postgres', q{SELECT count(*) FROM stream.absence_timers}) // 0, '>=', 1, '3 control: bob\'s timers exist');
cmp_ok($t->query('postgres', q{SELECT count(*) FROM stream.threshold_state}) // 0, '>=', 1, '3 control: bob\'s threshold state exists');
is(visible('bob', q{SELECT count(*) > 0 FROM stream.activations WHERE channel = 'bob_ch'}), 't',
	'3 control: bob sees his own outbox rows');
none_visible('mallory', q{SELECT count(*) FROM stream.activations WHERE channel IN ('bob_ch', 'bob_abs', 'bob_thr') OR payload::text LIKE '%ssn%'},
	'3: mallory sees no row of bob\'s outbox');
none_visible('mallory', q{SELECT count(*) FROM stream.absence_timers}, '3: mallory sees none of bob\'s absence timers');
none_visible('mallory', q{SELECT count(*) FROM stream.threshold_state}, '3: mallory sees none of bob\'s threshold state');
none_visible('carl', q{SELECT count(*) FROM stream.absence_timers}, '3: carl (a grantee) sees no timers (they are the owner\'s)');

# ================================================================ 4. views
note('--- 4. views show what the caller may see');
is(visible('bob', q{SELECT count(*) FROM stream.stats WHERE stream::text = 'bob_private'}), '1', '4 control: bob sees his stream in stream.stats');
cmp_ok(visible('bob', q{SELECT count(DISTINCT stream) FROM stream.compliance WHERE stream::text = 'bob_private'}), 'eq', '1',
	'4 control: bob sees his stream in stream.compliance');
is(visible('bob', q{SELECT count(*) FROM stream.aggregates WHERE name::text = 'bob_agg'}), '1', '4 control: bob sees his aggregate');
is(visible('bob', q{SELECT count(*) > 0 FROM stream.activation_stats WHERE activation LIKE 'bob%'}), 't', '4 control: bob sees his activations');
none_visible('mallory', q{SELECT count(*) FROM stream.stats WHERE stream::text = 'bob_private'}, '4: stream.stats lists nothing of bob\'s for mallory');
none_visible('mallory', q{SELECT count(*) FROM stream.compliance WHERE stream::text = 'bob_private'}, '4: stream.compliance lists nothing of bob\'s');
none_visible('mallory', q{SELECT count(*) FROM stream.aggregates WHERE name::text = 'bob_agg' OR query LIKE '%bob_private%'}, '4: stream.aggregates lists nothing of bob\'s');
none_visible('mallory', q{SELECT count(*) FROM stream.activation_stats WHERE activation LIKE 'bob%' OR channel LIKE 'bob%'}, '4: stream.activation_stats lists nothing of bob\'s');
none_visible('mallory', q{SELECT count(*) FROM stream.stream_list WHERE stream::text = 'bob_private'}, '4: stream.stream_list lists nothing of bob\'s');
none_visible('mallory', q{SELECT count(*) FROM stream.streams WHERE relid::text = 'bob_private'}, '4: stream.streams shows mallory no row of bob\'s');
none_visible('mallory', q{SELECT count(*) FROM stream.contracts WHERE stream::text = 'bob_private'}, '4: stream.contracts shows mallory no row of bob\'s');
none_visible('mallory', q{SELECT count(*) FROM stream.aggregate_defs WHERE view::text = 'bob_agg' OR query LIKE '%bob_private%'}, '4: stream.aggregate_defs shows mallory no row of bob\'s');
none_visible('mallory', q{SELECT count(*) FROM stream.activation_defs WHERE name LIKE 'bob%'}, '4: stream.activation_defs shows mallory no row of bob\'s');
is(visible('alice', q{SELECT count(*) FROM stream.stats WHERE stream = 'clicks'}), '1', q{4: SELECT * FROM stream.stats WHERE stream = 'clicks' works});
is(visible('alice', q{SELECT count(*) FROM stream.compliance WHERE stream = 'clicks'}), '0', q{4: stream.compliance WHERE stream = 'clicks' works});
is(visible('alice', q{SELECT count(*) FROM stream.aggregates WHERE name = 'clicks_daily'}), '1', q{4: stream.aggregates WHERE name = 'clicks_daily' works});

# ================================================================ 5. exactly-once holes
note('--- 5. exactly once: forged move markers, partitions created mid-transaction, DROP DATABASE');
$t->succeeds('alice', q{
SELECT stream.on_event('a_count', 'clicks', $c$ event_name IN ('hidden', 'after_part') $c$, channel => 'a_count');},
	'5: alice defines an activation for the events below');
flush();
my ($r5, undef, $e5) = $t->run('pat', q{
BEGIN;
SELECT pg_logical_emit_message(true, 'stream_events', 'move');
INSERT INTO public.clicks (event_name, user_id) VALUES ('hidden', 'p1'), ('hidden', 'p2'), ('hidden', 'p3');
COMMIT;});
is($r5, 0, '5: pat emits a "move" message with the extension\'s prefix, then inserts (pg_logical_emit_message is PUBLIC)')
  or diag($e5);
my $made = $t->succeeds('alice', q{
BEGIN;
INSERT INTO public.clicks (event_name, user_id, occurred_at) VALUES ('part_old', 'u1', now() - interval '50 days');
SELECT partitions_created || '/' || rows_moved FROM stream.maintain('clicks');
INSERT INTO public.clicks (event_name, user_id) VALUES ('after_part', 'a1'), ('after_part', 'a2');
COMMIT;},
	'5: alice creates a partition (stream.maintain) and inserts later in the same transaction');
like($made // '', qr{^[1-9]\d*/[1-9]}, "5: ... the maintenance created a partition and moved the event into it ($made)");
ok(flush(), '5: flush');
is(oracle_diff('clicks_daily', $oracle_q), '0/0', '5: events after a forged move message or a partition creation are aggregated');
is($t->query('postgres', q{SELECT count(*) FROM public.clicks_daily WHERE event_name IN ('hidden', 'after_part')}), '2',
	'5: both groups are in the aggregate');
is($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation = 'a_count'}), '5',
	'5: and they fired (3 hidden + 2 after_part)');
isnt(oracle_diff('clicks_daily', $oracle_q . q{ HAVING event_name <> 'view'}), '0/0',
	'5 control: the oracle comparison detects a wrong expected value');
isnt(oracle_diff('clicks_daily', q{SELECT day, event_name, events + 1 FROM (} . $oracle_q . q{) o}), '0/0',
	'5 control: ... and a wrong count');

# DROP DATABASE by a non-owner
su(q{CREATE DATABASE appdb});
su(q{
CREATE EXTENSION stream_events;
SELECT stream.create_stream('app');
SELECT stream.on_event('app_act', 'app', 'true', channel => 'app_ch');}, 'appdb');
ok(flush('appdb', '30 s'), '5: appdb\'s activation is running');
my $slot = su(q{SELECT 'stream_events_' || oid FROM pg_database WHERE datname = 'appdb'});
is(su(qq{SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'}), '1', '5: appdb has its slot');
{
	my $s = $node->background_psql('appdb');
	$s->query_safe(q{BEGIN});
	$s->query_safe(q{INSERT INTO public.app (event_name) VALUES ('during_drop_attempt')});
	$t->refused('mallory', q{DROP DATABASE appdb}, '42501', '5: DROP DATABASE by a non-owner: 42501');
	$t->refused('mallory', q{ALTER DATABASE appdb RENAME TO appdb2}, '42501', '5: ALTER DATABASE RENAME by a non-owner: 42501');
	$t->refused('mallory', q{CREATE DATABASE mcopy TEMPLATE appdb}, '42501', '5: CREATE DATABASE TEMPLATE without CREATEDB: 42501');
	$s->query_safe(q{COMMIT});
	$s->quit;
}
su(q{INSERT INTO public.app (event_name) VALUES ('after_drop_attempt')}, 'appdb');
ok(flush('appdb', '30 s'), '5: appdb flushes after the failed commands');
is(su(qq{SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'}), '1', '5: the slot is still there');
is(su(q{SELECT string_agg(payload->>'event_name', ',' ORDER BY id) FROM stream.activations}, 'appdb'),
	'during_drop_attempt,after_drop_attempt',
	'5: the activation fired for the event committed across the failed DROP DATABASE and after it (no rebuild, nothing lost)');

# ================================================================ 6. enforcement
note('--- 6. enforcement settings belong to the owner; owners and producers need no hidden grants');
$t->refused('pat', q{SET stream_events.format_assertion = off}, '42501', '6: pat cannot SET stream_events.format_assertion');
$t->refused('pat', q{SET stream_events.max_future = ''}, '42501', '6: pat cannot SET stream_events.max_future');
$t->refused('pat', q{SELECT set_config('stream_events.max_future', '', false)}, '42501', '6: nor with set_config');
$t->refused('pat', q{BEGIN; SET LOCAL stream_events.format_assertion = off; COMMIT;}, '42501', '6: nor with SET LOCAL');
$t->refused('pat', q{ALTER ROLE pat SET stream_events.format_assertion = off}, '42501', '6: nor with ALTER ROLE pat SET');
{
	# a connection-time setting fails the connection (libpq shows no SQLSTATE there)
	my ($rc, undef, $ec) = $t->run("pat options='-c stream_events.max_future='", q{SELECT 1});
	like($ec, qr/FATAL:.*permission denied to set parameter/, '6: nor in the connection\'s startup options (FATAL permission denied)');
}
$t->succeeds('postgres', q{SET stream_events.format_assertion = off; SET stream_events.max_future = ''},
	'6 control: the superuser can SET both (the names exist)');
$t->succeeds('alice', q{
SELECT stream.create_stream('orders');
GRANT INSERT ON public.orders TO pat;
SELECT stream.define_contract('orders', 'signup',
    '{"type": "object", "required": ["email"], "properties": {"email": {"type": "string", "format": "email"}}}');},
	'6: a non-superuser owner (alice) defines a contract');
$t->succeeds('alice', q{SELECT stream.set_policy('orders', on_violation => 'quarantine', max_future => '1 hour', format_assertion => true)},
	'6: alice sets the policy (quarantine, max_future, format_assertion)');
$t->succeeds('pat', q{INSERT INTO public.orders (event_name, user_id, properties) VALUES ('signup', 'p_missing', '{}')},
	'6: pat (INSERT only) inserts a violating event: the statement succeeds');
is($t->query('postgres', q{SELECT count(*) FROM public.orders_quarantine WHERE user_id = 'p_missing'}), '1',
	'6: ... and it is quarantined (written with the owner\'s rights)');
$t->run('pat', q{
SET stream_events.format_assertion = off;
INSERT INTO public.orders (event_name, user_id, properties) VALUES ('signup', 'p_format', '{"email": "not an email"}');
SET stream_events.max_future = '';
INSERT INTO public.orders (event_name, user_id, occurred_at, properties) VALUES ('signup', 'p_future', now() + interval '1 day', '{"email": "a@example.com"}');},
	undef, 1);
is($t->query('postgres', q{SELECT count(*) FROM public.orders WHERE user_id IN ('p_format', 'p_future')}), '0',
	'6: pat\'s SETs do not weaken the stream\'s format_assertion and max_future (neither event stored)');
$t->succeeds('pat', q{SELECT * FROM stream.ingest('public.orders', '[{"event_name": "signup", "user_id": "p_ingest", "properties": {"email": "i@example.com"}}, {"event_name": "signup", "user_id": "p_ingest_bad", "properties": {}}]')},
	'6: pat (INSERT only) uses stream.ingest');
is($t->query('postgres', q{SELECT (SELECT count(*) FROM public.orders WHERE user_id = 'p_ingest') || '/' || (SELECT count(*) FROM public.orders_quarantine WHERE user_id = 'p_ingest_bad')}),
	'1/1', '6: ... the good event is stored, the bad one quarantined');
my $eid = '0190d1f0-0000-7000-8000-000000000001';
$t->succeeds('pat', qq{
INSERT INTO public.orders (event_id, event_name, user_id, properties) VALUES ('$eid', 'signup', 'p_dup', '{"email": "d\@example.com"}');
INSERT INTO public.orders (event_id, event_name, user_id, properties) VALUES ('$eid', 'signup', 'p_dup', '{"email": "d\@example.com"}');},
	'6: pat inserts the same event twice');
is($t->query('postgres', qq{SELECT count(*) FROM public.orders WHERE event_id = '$eid'}), '1', '6: dedup drops the duplicate');
# the stream's key table is the extension's: neither the stream's owner nor
# its producer reads or writes it (a forged key would drop an event, a
# deleted one let a retry in)
my $orders_keys = 'stream.dedup_keys_'
  . $t->query('postgres', q{SELECT stream_id FROM stream.streams WHERE relid = 'public.orders'::regclass});
for my $who ('alice', 'pat')
{
	for my $op ("SELECT count(*) FROM $orders_keys",
		"DELETE FROM $orders_keys WHERE event_id = '$eid'",
		"INSERT INTO $orders_keys VALUES (gen_random_uuid(), now())",
		"TRUNCATE $orders_keys")
	{
		$t->refused($who, $op, '42501', "6: $who cannot run " . (split / /, $op)[0] . " on the stream's key table");
	}
}
is($t->query('postgres', qq{SELECT count(*) FROM $orders_keys WHERE event_id = '$eid'}), '1',
	'6: ... and its key is still there');
$t->succeeds('alice', q{SELECT stream.define_contract('orders', 'signup', '{"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}', compatibility => 'none')},
	'6: alice publishes a relaxed contract');
$t->succeeds('alice', q{SELECT stream.replay_quarantine('orders')}, '6: alice replays the quarantine');
is($t->query('postgres', q{SELECT count(*) FROM public.orders WHERE user_id = 'p_missing'}), '1',
	'6: the event that now passes was replayed');
$t->succeeds('alice', q{SELECT stream.on_event('a_imm2', 'orders', $c$ event_name = 'paid' $c$, channel => 'a_imm2', delivery => 'immediate')},
	'6: alice defines an immediate activation on orders');
$t->succeeds('pat', q{INSERT INTO public.orders (event_name, user_id) VALUES ('paid', 'p_paid')},
	'6: pat (INSERT only) inserts into a stream with an immediate activation');
is($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation = 'a_imm2'}), '1',
	'6: the immediate activation fired in pat\'s transaction');

# ================================================================ 8. names
note('--- 8. names with quotes and semicolons are quoted or refused, never executed');
my $evil_name = q{x'"; DROP TABLE public.canary; --};
sub lit { my ($v) = @_; return "'" . ($v =~ s/'/''/gr) . "'"; }
sub ident { my ($v) = @_; return '"' . ($v =~ s/"/""/gr) . '"'; }
my $evil_rel = 'public.' . ident($evil_name);
my $evil_dflt = 'public.' . ident($evil_name . '_default');
$t->succeeds('alice', 'SELECT stream.create_stream(' . lit(ident($evil_name)) . ");
INSERT INTO $evil_rel (event_name, user_id, occurred_at) VALUES ('old', 'u1', now() - interval '40 days');",
	'8: alice creates a stream whose name has quotes and a semicolon (a legal identifier)');
su(q{SELECT * FROM stream.maintain()});
is($t->query('postgres', "SELECT count(*) FROM ONLY $evil_dflt"), '0', '8: maintenance moved its event into a new partition');
$t->succeeds('alice', 'SELECT stream.create_aggregate(' . lit(ident("a$evil_name")) . ", \$q\$ SELECT event_name, count(*) AS n FROM $evil_rel GROUP BY 1 \$q\$)",
	'8: alice creates an aggregate with such a name over it');
$t->succeeds('postgres', 'SELECT stream.create_aggregate(' . lit(ident("s$evil_name")) . ", \$q\$ SELECT event_name, count(*) AS n FROM $evil_rel GROUP BY 1 \$q\$)",
	'8: the superuser creates one too');
flush();
is($t->query('postgres', 'SELECT (SELECT n FROM public.' . ident("a$evil_name") . ') || \'/\' || (SELECT n FROM public.' . ident("s$evil_name") . ')'),
	'1/1', '8: the worker maintains both');
$t->succeeds('alice', 'SELECT stream.on_event(' . join(', ', "'q_imm'", lit($evil_rel), "'true'", "channel => 'q_imm'", "delivery => 'immediate'") . ');'
	  . 'SELECT stream.on_event(' . join(', ', "'q_bat'", lit($evil_rel), "'true'", "channel => 'q_bat'") . ');',
	'8: alice defines immediate and batched activations on it');
$t->run('alice', "INSERT INTO $evil_rel (event_name, user_id) VALUES ('now', 'u2')");
flush();
is($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation IN ('q_imm', 'q_bat')}), '2', '8: both fired');
$t->succeeds('postgres', 'SELECT stream.drop_aggregate(' . lit(ident("s$evil_name")) . ')', '8: the superuser drops his');
$t->succeeds('alice', 'SELECT stream.drop_aggregate(' . lit(ident("a$evil_name")) . '); SELECT stream.drop_stream(' . lit(ident($evil_name)) . ')',
	'8: alice drops hers and the stream (the sql_drop trigger drops its quarantine table)');
is($t->query('postgres', 'SELECT count(*) FROM pg_class WHERE relname LIKE ' . lit('%DROP TABLE%')), '0', '8: nothing of it is left');
attack_ok('8: stream and aggregate names with quotes and semicolons (create, maintain, worker, drop)');
my $evil_sq = $evil_name =~ s/'/''/gr;
$t->refused('alice', qq{SELECT stream.on_event('$evil_sq', 'clicks', 'true', channel => 'ok_channel')}, '42602',
	'8: an activation name with quotes and semicolons is refused (invalid_name)');
$t->refused('alice', qq{SELECT stream.on_event('ok_name', 'clicks', 'true', channel => '$evil_sq')}, '42602',
	'8: a channel with quotes and semicolons is refused (invalid_name)');
$t->refused_any('alice', qq{SELECT stream.grant_channel('$evil_sq', 'carl')}, '8: grant_channel of such a channel is refused');
$t->run('mallory', qq{SELECT * FROM stream.consume('$evil_sq', '$evil_sq', 10)});
$t->run('postgres', qq{SELECT * FROM stream.consume('$evil_sq', '$evil_sq', 10)});
$t->refused_any('postgres', q{SELECT stream.create_aggregate('semi', $q$ SELECT event_name, count(*) FROM public.clicks GROUP BY 1; DROP TABLE public.canary $q$)},
	'8: a defining query with a second statement is refused');
$t->refused_any('postgres', q{SELECT stream.on_event('semi', 'clicks', $c$ true; DROP TABLE public.canary $c$)},
	'8: a condition with a second statement is refused');
attack_ok('8: names in consume, grant_channel, queries and conditions');

# ================================================================ 2. forged catalog rows
note('--- 2. forged catalog rows are refused');
my $bob_sid = su(q{SELECT stream_id FROM stream.streams WHERE relid = 'public.bob_private'::regclass});
$t->succeeds('mallory', q{
CREATE TABLE public.m_fake (x int);
CREATE VIEW public.m_view AS SELECT 1 AS one;
SELECT stream.create_stream('m_tmp');
SELECT stream.create_aggregate('m_agg3', $q$ SELECT event_name, count(*) AS n FROM public.m_stream GROUP BY 1 $q$);},
	'2: mallory\'s own objects for the forgeries');
flush();

# Each forged statement: the superuser can run it (control: well-formed, it
# does something), mallory gets 42501.  Then what it would have done.
sub forge
{
	my @pairs = @_;
	while (my ($what, $sql) = splice(@pairs, 0, 2))
	{
		my ($rc, undef, $ec) = $t->run('postgres', "BEGIN; $sql; ROLLBACK;");
		is($rc, 0, "2 control: $what works as the superuser") or diag($ec);
		$t->refused('mallory', $sql, '42501', "2: $what by mallory: 42501");
	}
}
# the worker reloads definitions when one is created or dropped
sub wake_worker { $t->run('mallory', q{SELECT stream.on_event('m_wake', 'm_stream', 'true'); SELECT stream.drop_activation('m_wake');}); }

# outbox, offsets, registry
forge(
	'activations INSERT (fake outbox row on bob\'s channel)' =>
	  q{INSERT INTO stream.activations (activation, payload, channel) VALUES ('bob_act', '{"fake": true}', 'bob_ch')},
	'consumer_offsets UPDATE (carl\'s position)' =>
	  q{UPDATE stream.consumer_offsets SET acked_id = 0, delivered_id = 0 WHERE consumer = 'carl_c'},
	'schemas INSERT' => q{INSERT INTO stream.schemas (uri, schema) VALUES ('urn:mallory', '{}')},
	'schemas UPDATE' => q{UPDATE stream.schemas SET schema = '{"not": {}}'});
is($t->query('carl', q{SELECT count(*) FROM stream.consume('carl_c', 'bob_ch', 10)}), '0',
	'2: carl gets no fake row and no rewound position');

# streams: the sql_drop trigger drops the table named in quarantine
forge(
	'streams INSERT (quarantine = canary)' =>
	  q{INSERT INTO stream.streams (relid, partition_interval, quarantine) VALUES ('public.m_fake', '1 day', 'public.canary')},
	'streams UPDATE (quarantine = canary)' =>
	  q{UPDATE stream.streams SET quarantine = 'public.canary' WHERE relid = 'public.m_tmp'::regclass},
	'streams DELETE (bob\'s row)' =>
	  q{DELETE FROM stream.streams WHERE relid = 'public.bob_private'::regclass});
$t->run('mallory', q{DROP TABLE public.m_fake; SELECT stream.drop_stream('m_tmp');});
attack_ok('2: forged stream rows, then their tables dropped');
is($t->query('postgres', q{SELECT count(*) FROM stream.streams WHERE relid = 'public.bob_private'::regclass}), '1',
	'2: bob\'s catalog row is still there');

# contracts: another owner's events
forge(
	'contracts INSERT (on bob\'s stream)' =>
	  qq{INSERT INTO stream.contracts (stream_id, stream, event_name, version, schema, compatibility, schema_uri)
	    VALUES ($bob_sid, 'public.m_stream', 'bob_secret', 99, '{"required": ["never"]}', 'none', 'urn:m')});
$t->run('postgres', q{SELECT stream._stream_changed('public.bob_private')});
$t->run('bob', q{INSERT INTO public.bob_private (event_name, user_id, properties) VALUES ('bob_secret', 'b4', '{"ssn": "1"}')});
is($t->query('postgres', q{SELECT count(*) FROM public.bob_private WHERE user_id = 'b4'}), '1',
	'2: bob\'s insert is not rejected by a forged contract');
su(q{DELETE FROM stream.contracts WHERE schema_uri = 'urn:m'; SELECT stream._stream_changed('public.bob_private');});

# activation_defs: an activation on a stream mallory cannot read
forge(
	'activation_defs INSERT (on bob\'s stream)' =>
	  q{INSERT INTO stream.activation_defs (name, kind, stream, condition, channel, owner, search_path, applied_lsn)
	    VALUES ('m_spy', 'event', 'public.bob_private', 'true', 'm_spy', 'mallory', 'public', pg_current_wal_insert_lsn())},
	'activation_defs DELETE (bob\'s activation)' =>
	  q{DELETE FROM stream.activation_defs WHERE name = 'bob_act'});
wake_worker();
$t->run('bob', q{INSERT INTO public.bob_private (event_name, user_id, properties) VALUES ('bob_secret', 'b5', '{"ssn": "2"}')});
flush();
is($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation = 'm_spy'}), '0',
	'2: no forged activation fired on bob\'s stream');
is($t->query('postgres', q{SELECT count(*) FROM stream.activation_defs WHERE name = 'bob_act'}), '1',
	'2: bob\'s activation is still there');
su(q{DELETE FROM stream.activation_defs WHERE name = 'm_spy'});

# aggregate_defs: adoption (a row "from elsewhere") truncates state_table; a forged tree reads another stream
my $here = su(q{SELECT origin FROM stream.aggregate_defs WHERE view = 'public.clicks_daily'::regclass});
forge(
	'aggregate_defs UPDATE (own row: state_table = canary, from elsewhere)' =>
	  q{UPDATE stream.aggregate_defs SET state_table = 'public.canary', origin = 'elsewhere' WHERE view = 'public.m_agg3'::regclass});
wake_worker();
flush();
# (if the forgery got through, adoption resets origin once it has truncated the table)
wait_for(qq{SELECT origin = '$here' FROM stream.aggregate_defs WHERE view = 'public.m_agg3'::regclass}, 't', undef, 5);
attack_ok('2: own aggregate row pointed at the canary (adoption truncates it)');
su(qq{UPDATE stream.aggregate_defs SET state_table = 'public.m_agg3_state', origin = '$here' WHERE view = 'public.m_agg3'::regclass});
forge(
	'aggregate_defs INSERT (state_table = victim, from elsewhere)' =>
	  q{INSERT INTO stream.aggregate_defs (view, state_table, stream, owner, query, query_tree, origin)
	    VALUES ('public.m_view', 'public.victim', 'public.m_stream', 'mallory',
	            'SELECT event_name, count(*) AS n FROM public.m_stream GROUP BY 1', '{QUERY}', 'elsewhere')});
wake_worker();
flush();
wait_for(qq{SELECT count(*) = 0 FROM stream.aggregate_defs WHERE view = 'public.m_view'::regclass AND origin <> '$here'}, 't', undef, 5);
attack_ok('2: forged aggregate row with the victim as state table (adoption truncates it)');
su(q{DELETE FROM stream.aggregate_defs WHERE view = 'public.m_view'::regclass});
forge(
	'aggregate_defs UPDATE (own row: read bob\'s stream)' =>
	  q{UPDATE stream.aggregate_defs SET stream = 'public.bob_private',
	           query_tree = replace(query_tree, ':relid ' || 'public.m_stream'::regclass::oid, ':relid ' || 'public.bob_private'::regclass::oid),
	           status = 'backfill', applied_lsn = NULL
	    WHERE view = 'public.m_agg3'::regclass});
wake_worker();
flush();
is($t->query('mallory', q{SELECT count(*) FROM public.m_agg3 WHERE event_name LIKE 'bob%'}) // '0', '0',
	'2: mallory\'s aggregate never read bob\'s stream');
su(q{UPDATE stream.aggregate_defs SET stream = 'public.m_stream' WHERE view = 'public.m_agg3'::regclass;
DELETE FROM stream.activations WHERE payload = '{"fake": true}';});
reset_state();

# ================================================================ 7. internal functions
note('--- 7. internal functions are not executable by PUBLIC');
$t->succeeds('postgres', qq{SELECT stream._priv_prune_dedup_keys('bob', $bob_sid)},
	'7 control: the superuser executes _priv_prune_dedup_keys (the signature exists)');
my $m_id = $t->query('postgres', q{SELECT max(id) FROM stream.activations WHERE channel = 'bob_ch'}) || 1;
$t->succeeds('postgres', q{
CREATE FUNCTION public.su_add(a int, b int) RETURNS int IMMUTABLE LANGUAGE sql AS $f$ SELECT coalesce(a, 0) + coalesce(b, 0) $f$;
CREATE AGGREGATE public.su_sum(int) (sfunc = public.su_add, stype = int, combinefunc = public.su_add, initcond = '0');
GRANT EXECUTE ON FUNCTION public.su_sum(int) TO PUBLIC},
	'7 control: a superuser-owned aggregate with SQL support functions');
$t->succeeds('postgres', q{SELECT stream.combine_states(1, 2, 'public.su_sum(int)'::regprocedure)},
	'7 control: its owner combines its states');
my %internal = (
	'_priv_prune_dedup_keys (as bob)' => qq{SELECT stream._priv_prune_dedup_keys('bob', $bob_sid)},
	'_priv_register_stream (as bob)' =>
	  q{SELECT stream._priv_register_stream('bob', 'public.canary', '1 day', NULL, NULL, 'public.victim')},
	'_priv_grant_channel (as bob)' => q{SELECT stream._priv_grant_channel('bob', 'bob_ch', 'mallory', true)},
	'_priv_ack (as carl)' => qq{SELECT stream._priv_ack('carl', 'carl_c', $m_id)},
	'_consumer_claim (as carl)' => q{SELECT stream._consumer_claim('carl', 'carl_c', 'bob_ch')},
	'_aggregate_analyze_as (as bob)' =>
	  q{SELECT stream._aggregate_analyze_as('bob', 'public', 'SELECT event_name, count(*) FROM public.bob_private GROUP BY 1')},
	# open to PUBLIC (the worker's upsert runs it as each aggregate's owner),
	# but not with another role's aggregate whose support functions are not
	# built in (docs/security.md, 7)
	'combine_states (another role\'s aggregate)' =>
	  q{SELECT stream.combine_states(1, 2, 'public.su_sum(int)'::regprocedure)},
	'_create_dedup_keys' => q{SELECT stream._create_dedup_keys(999999)},
	'_dedup_keys_of' => qq{SELECT stream._dedup_keys_of($bob_sid)},
	'_move_rows' => q{SELECT stream._move_rows('public.bob_private_default', 'public.m_stream_default', '-infinity', 'infinity')},
	'_aggregate_adopt' => q{SELECT stream._aggregate_adopt()},
	'_aggregate_depend' => q{SELECT stream._aggregate_depend('public.canary', 'public.m_stream')},
	'_activation_sync_trigger' => q{SELECT stream._activation_sync_trigger('public.bob_private')},
	'_stream_changed' => q{SELECT stream._stream_changed('public.bob_private')},
	'reset_stats' => q{SELECT stream.reset_stats('public.bob_private')},
	'prune_activations' => q{SELECT stream.prune_activations('0 s')},
	# the door: it passes the caller (mallory) on; each writer checks her rights
	'_priv -> _priv_grant_channel (bob\'s channel)' =>
	  q{SELECT stream._priv('stream._priv_grant_channel', 'bob_ch'::text, 'mallory'::regrole, true)},
	'_priv -> _priv_ack (carl\'s consumer)' =>
	  qq{SELECT stream._priv('stream._priv_ack', 'carl_c'::text, ${m_id}::bigint)},
	'_priv -> _priv_define_contract (bob\'s stream)' =>
	  q{SELECT stream._priv('stream._priv_define_contract', 'public.bob_private'::regclass, 'bob_secret'::text, '{"required": ["never"]}'::jsonb, 'none'::text)},
	'_priv -> _priv_set_policy (bob\'s stream)' =>
	  q{SELECT stream._priv('stream._priv_set_policy', 'public.bob_private'::regclass, 'reject'::text, 'reject'::text, NULL::text, NULL::boolean, NULL::interval, NULL::boolean)},
	'_priv -> _priv_register_activation (bob\'s stream, no SELECT)' =>
	  q{SELECT stream._priv('stream._priv_register_activation', 'm_spy2'::text, 'event'::text, 'public.bob_private'::regclass, NULL::regclass, 'true'::text, NULL::text, NULL::interval, NULL::text, NULL::text, 'm_spy2'::text, NULL::interval, 'batched'::text, 'full'::text, 'public'::text, 'stop'::text)},
	'_priv -> _priv_register_aggregate (state table = canary)' =>
	  q{SELECT stream._priv('stream._priv_register_aggregate', 'public.m_view'::regclass, 'public.canary'::regclass, 'SELECT event_name, count(*) AS n FROM public.m_stream GROUP BY 1'::text, 'public'::text, 'stop'::text)},
	'_priv -> _priv_rebuild_aggregate (bob\'s aggregate)' =>
	  q{SELECT stream._priv('stream._priv_rebuild_aggregate', 'public.bob_agg'::regclass)},
	'_priv -> a function that is not a catalog writer' =>
	  q{SELECT stream._priv('pg_catalog.pg_reload_conf', 1)},
);
for my $f (sort keys %internal)
{
	$t->refused('mallory', $internal{$f}, '42501', "7: mallory cannot execute stream.$f");
}
my $drop_state = $t->refused_any('mallory', q{SELECT stream._priv('stream._priv_drop_activation', 'bob_act'::text)},
	'7: mallory cannot drop bob\'s activation through the door');
ok($drop_state eq '42501' || $drop_state eq '42704', "7: ... refused as not hers or not visible ($drop_state)");
is($t->query('postgres', q{SELECT count(*) FROM stream.activation_defs WHERE name IN ('bob_act', 'm_spy2')}), '1',
	'7: bob\'s activation is still there, no m_spy2');
# _aggregate_depend would make the superuser's canary depend on mallory's table
$t->run('mallory', q{SELECT stream.create_stream('m_dep'); SELECT stream._aggregate_depend('public.canary', 'public.m_dep'); DROP TABLE public.m_dep CASCADE;});
attack_ok('7: _aggregate_depend + DROP ... CASCADE');

# ---- from here on, what could crash the server
note('--- crash-prone attempts last');
$t->mark_log;
my @forged_states = (
	q{SELECT stream.finalize_state('\x00ffffffff00'::bytea, 'avg(numeric)'::regprocedure, NULL::numeric)},
	q{SELECT stream.finalize_state('\xffffffffffffffffffffffff'::bytea, 'stddev(numeric)'::regprocedure, NULL::numeric)},
	q{SELECT stream.finalize_state('\x'::bytea, 'avg(int8)'::regprocedure, NULL::numeric)},
	q{SELECT stream.finalize_state(12345::bigint, 'avg(numeric)'::regprocedure, NULL::numeric)},
	q{SELECT stream.finalize_state('hello'::text, 'avg(int4)'::regprocedure, NULL::numeric)},
	q{SELECT stream.finalize_state(1::int, 'max(text)'::regprocedure, NULL::text)},
);
for my $i (0 .. $#forged_states)
{
	my ($ret, $out, $err) = $t->run('mallory', $forged_states[$i]);
	my $state = $ret == 0 ? 'ok' : SecurityTest::sqlstate($err);
	ok($err !~ /server closed the connection|connection to server was lost|terminated abnormally/,
		"7: finalize_state with a forged state ($i) does not crash the backend ($state)")
	  or diag($err);
}
is($t->crashes_in_log, '', '7: no backend crashed (log)');

# forged analysed tree: refused, and the server survives
$t->mark_log;
$t->refused('mallory', q{UPDATE stream.aggregate_defs SET query_tree = '{QUERY :commandType 1 :querySource 0 :canSetTag true}', status = 'backfill', applied_lsn = NULL WHERE view = 'public.m_agg3'::regclass},
	'42501', '2: a forged query_tree by mallory: 42501');
wake_worker();
flush(undef, '5 s');
# (if the forgery got through, give the worker the time to load it)
wait_for(q{SELECT status <> 'backfill' FROM stream.aggregate_defs WHERE view = 'public.m_agg3'::regclass}, 't', undef, 5);
is($t->query('postgres', 'SELECT 1'), '1', '2: the server answers after the forged query_tree');
is($t->crashes_in_log, '', '2: no crash or restart in the log');

# ================================================================ availability (last: a failing definition must not stop the others)
note('--- a definition the worker cannot run stops no one else');

# Back to a working worker for alice's definitions once a failing one is gone.
sub recover
{
	$t->run('alice', q{SELECT stream.rebuild_aggregate('clicks_daily')})
	  if ($t->query('postgres', q{SELECT status FROM stream.aggregate_defs WHERE view = 'public.clicks_daily'::regclass}) // '') eq 'error';
	my ($r) = $t->run('postgres', q{SELECT stream.flush(timeout => '10 s')});
	note('after recovery: clicks_daily ' . ($t->query('postgres', q{SELECT status || ' ' || coalesce(last_error, '') FROM stream.aggregate_defs WHERE view = 'public.clicks_daily'::regclass}) // '?')
		  . ($r == 0 ? ', flush ok' : ', flush failed'));
}

# alice's aggregate and activation keep up while another role's definition fails
my $a_count = $t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation = 'a_count'}) // 0;
sub alice_keeps_working
{
	my ($why) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$a_count++;
	$t->run('alice', q{INSERT INTO public.clicks (event_name, user_id) VALUES ('after_failure', 'u1'), ('hidden', 'u9')});
	my ($rb, undef, $eb) = $t->run('postgres', q{SELECT stream.flush('clicks_daily', timeout => '8 s')});
	is($rb, 0, "availability ($why): alice's aggregate still catches up") or diag($eb);
	is(oracle_diff('clicks_daily', $oracle_q), '0/0', "availability ($why): clicks_daily still equals its defining query");
	ok(wait_for(q{SELECT count(*) FROM stream.activations WHERE activation = 'a_count'}, $a_count, undef, 3),
		"availability ($why): alice's activation still fires");
}

# 1h. a function the owner may not EXECUTE (EXECUTE checks are the owner's)
$t->refused('alice',
	q{SELECT stream.create_aggregate('a_su', $q$ SELECT event_name, count(*) AS n FROM public.clicks WHERE public.su_only('1h') GROUP BY 1 $q$)},
	'42501', '1h: an aggregate calling a function its owner cannot execute is refused');
$t->refused('alice',
	q{SELECT stream.on_event('a_su', 'clicks', $c$ public.su_only('1h act') $c$)},
	'42501', '1h: an activation calling a function its owner cannot execute is refused');
$t->run('postgres', q{SELECT stream.flush('clicks_daily', timeout => '5 s')});
is($t->query('postgres', q{SELECT count(*) FROM sec.su_only_calls}), '0',
	'1h: the superuser-only function never ran');
$t->run('alice', q{SELECT stream.drop_aggregate('a_su')});
$t->run('alice', q{SELECT stream.drop_activation('a_su')});
recover();

# an aggregate that raises on one of its owner's events
$t->succeeds('mallory', q{
CREATE FUNCTION public.m_boom(t text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN IF t = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN t; END $f$;
SELECT stream.create_aggregate('m_boom_agg', $q$ SELECT public.m_boom(event_name) AS k, count(*) AS n FROM public.m_stream GROUP BY 1 $q$);
INSERT INTO public.m_stream (event_name) VALUES ('boom');},
	'availability: mallory defines an aggregate that fails on her own event');
alice_keeps_working('an aggregate of mallory\'s raises');
$t->run('mallory', q{SELECT stream.drop_aggregate('m_boom_agg')});
recover();

# an activation whose condition writes (an XID inside logical decoding)
$t->succeeds('mallory', q{
CREATE TABLE public.m_log (x text);
CREATE FUNCTION public.m_log_v(t text) RETURNS void LANGUAGE sql AS $f$ INSERT INTO public.m_log VALUES (t) $f$;
CREATE FUNCTION public.m_log_b(t text) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.m_log_v(t); RETURN true; END $f$;
SELECT stream.on_event('m_writer', 'm_stream', $c$ public.m_log_b(event_name) $c$);
INSERT INTO public.m_stream (event_name) VALUES ('write');},
	'availability: mallory defines an activation whose condition writes to her own table');
alice_keeps_working('an activation of mallory\'s writes');
$t->run('mallory', q{SELECT stream.drop_activation('m_writer')});
recover();

# 1j. an operator planted later in a schema of bob's search_path is not picked up by bob's
# activation in the worker (bob's condition was analysed when he defined it)
$t->mark_log;
$t->succeeds('mallory', q{
CREATE FUNCTION public.m_trojan(a numeric, b integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN RAISE WARNING 'TROJAN ran as %', current_user; RETURN a >= b::numeric; END $f$;
CREATE OPERATOR public.>= (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.m_trojan);},
	'1j: mallory plants an operator >= (numeric, integer) in public, which bob\'s search_path has');
fast_stop('1j');
$node->start;    # the worker loads every definition again
$t->run('bob', q{INSERT INTO public.bob_private (event_name, user_id, properties) VALUES ('bob_secret', 'b_vip', '{"price": 150}')});
flush();
is($t->query('postgres', q{SELECT count(*) FROM stream.activations WHERE activation = 'bob_vip'}), '1',
	'1j: bob\'s activation fired');
my @trojan = grep { /WARNING:\s+TROJAN ran as \w/ } split /\n/, slurp_file($node->logfile, $t->{log_offset});
is(scalar(@trojan), 0, '1j: mallory\'s operator never ran in bob\'s activation (as bob, in the worker)')
  or diag($trojan[0]);
$t->run('mallory', q{DROP OPERATOR public.>= (numeric, integer)});

# ---------------------------------------------------------------- COPY
# COPY into a stream runs batched in the extension's utility hook
# (src/stream/copy.c): it lets copy exactly who PostgreSQL's COPY lets.
$t->succeeds('pat', q{\copy public.clicks (event_name, user_id) FROM PROGRAM 'echo "pat_copied	p1"'},
	'copy: pat (INSERT on clicks) copies into it from the client');
is($t->query('alice', q{SELECT count(*) FROM public.clicks WHERE event_name = 'pat_copied'}), '1',
	'copy: pat\'s row is stored');
$t->refused('mallory', q{\copy public.clicks (event_name) FROM PROGRAM 'echo mallory_copied'}, '42501',
	'copy: mallory (no INSERT on clicks) cannot copy into it');
$t->refused('pat', q{COPY public.clicks (event_name) FROM '/etc/hostname'}, '42501',
	'copy: pat cannot have the server read a file into the stream (no pg_read_server_files)');
$t->refused('pat', q{COPY public.clicks (event_name) FROM PROGRAM 'id -un'}, '42501',
	'copy: pat cannot have the server run a program (no pg_execute_server_program)');
is($t->query('alice', q{SELECT count(*) FROM public.clicks WHERE event_name NOT IN ('pat_copied') AND received_at > now() - interval '1 minute' AND event_name LIKE '%copied%'}), '0',
	'copy: nothing of the refused COPYs is stored');

# ---------------------------------------------------------------- end
is(sec_state(), $CLEAN, 'end: clean');
fast_stop('end');
done_testing();
