# Capture of operational tables (stream.capture, docs/capture.md): plain SQL
# on a table becomes events of a stream.
# Runs in both consumer modes: logical decoding, and the ingest queue when
# STREAM_EVENTS_TEST_MODE=queue (StreamEventsTest); in queue mode the test
# also drains stream.capture_log itself (stream._capture_drain, what the
# worker does each loop) to know when everything is written.
#   - insert, update, delete, a multi-statement transaction, a rolled back
#     transaction, a savepoint rolled back: names, properties, context, user_id,
#     occurred_at = commit time, ids = the deterministic v5 of the position;
#   - an aggregate over the captured stream equals its oracle;
#   - a contract rejection quarantines the event, the source commits;
#   - crashes (-m immediate) while pgbench updates the table: every committed
#     change is exactly one event (the stream has no dedup, so a duplicate
#     would show);
#   - privileges: non-superusers trying to capture what they may not read,
#     to put a trigger where they may not, to write a stream they may not,
#     to forge the catalog, to uncapture another's capture; an owner who
#     loses INSERT stops the capture alone, resume_capture loses nothing;
#   - quoted identifiers; uncapture stops it; a dropped table takes its capture.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use StreamEventsTest;
use SecurityTest;
use CaptureTest;
use Test::More;

my $node = StreamEventsTest::new_node('capture', q{track_commit_timestamp = on},
	q{stream_events.consumer_memory = '16MB'},    # the capture's batch spills at 4MB
	q{max_connections = 30});
$node->start;
my $t = SecurityTest->new($node);

$node->safe_psql('postgres', q{
CREATE EXTENSION stream_events;
SELECT stream.create_stream('ticket_events', dedup_window => NULL);
CREATE TABLE tickets (id int PRIMARY KEY, user_id text, status text NOT NULL DEFAULT 'open',
                      priority int NOT NULL DEFAULT 1, body text);
ALTER TABLE tickets REPLICA IDENTITY FULL;
-- the oracle of committed changes: one row per changed row, in the same transaction
CREATE TABLE audit (n bigserial, op text);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (op) VALUES (lower(TG_OP)); RETURN NULL; END $$;
CREATE TRIGGER a_audit AFTER INSERT OR UPDATE OR DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION audit_row();
SELECT stream.create_aggregate('ticket_counts', $q$
    SELECT event_name, user_id, count(*) AS n, max(occurred_at) AS last
    FROM ticket_events GROUP BY 1, 2 $q$);
});
my $mode = $node->safe_psql('postgres', 'SELECT stream._capture_mode()');
note("capture mode: $mode");

is($node->safe_psql('postgres',
		q{SELECT stream.capture('tickets', stream => 'ticket_events', user_id => 'user_id')}),
	'1', 'capture returns its id');

# Every change committed so far is in the stream, and the aggregates caught up.
sub caught_up
{
	my ($what) = @_;
	if ($mode eq 'queue')
	{
		$node->safe_psql('postgres', 'SELECT stream._capture_drain()');
	}
	else
	{
		my $target = $node->safe_psql('postgres', 'SELECT stream._aggregate_wake(true)');
		$node->poll_query_until('postgres',
			"SELECT coalesce(bool_and(applied_lsn >= '$target' OR status = 'error'), true) FROM stream.captures")
		  or die "captures did not catch up ($what)";
	}
	$node->safe_psql('postgres', q{SELECT stream.flush(timeout => '60 s')});
}

# the capture is live once the worker wrote its applied LSN
if ($mode eq 'logical')
{
	$node->poll_query_until('postgres',
		q{SELECT applied_lsn IS NOT NULL FROM stream.captures WHERE source = 'tickets'::regclass})
	  or die 'capture never went live';
}

$node->safe_psql('postgres', q{
INSERT INTO tickets (id, user_id, body) VALUES (1, 'u1', 'printer'), (2, 'u2', 'login'), (3, NULL, 'anon');
UPDATE tickets SET status = 'resolved' WHERE id = 1;
DELETE FROM tickets WHERE id = 3;
BEGIN;
INSERT INTO tickets (id, user_id) VALUES (10, 'u10');
UPDATE tickets SET priority = 5, status = 'urgent' WHERE id = 10;
DELETE FROM tickets WHERE id = 2;
COMMIT;
BEGIN;
INSERT INTO tickets (id, user_id) VALUES (100, 'u100');
ROLLBACK;
BEGIN;
INSERT INTO tickets (id, user_id) VALUES (200, 'u200');
SAVEPOINT s;
INSERT INTO tickets (id, user_id) VALUES (201, 'u201');
UPDATE tickets SET body = 'lost' WHERE id = 200;
ROLLBACK TO s;
UPDATE tickets SET body = 'kept' WHERE id = 200;
COMMIT;
});
caught_up('first changes');

is($node->safe_psql('postgres', q{
SELECT string_agg(event_name || ' ' || coalesce(user_id, '-') || ' ' || (properties->>'id'), ', '
                  ORDER BY properties->>'id', context->>'position')
FROM ticket_events}),
	'tickets.insert u1 1, tickets.update u1 1, tickets.insert u10 10, tickets.update u10 10, '
	  . 'tickets.insert u2 2, tickets.delete u2 2, tickets.insert u200 200, tickets.update u200 200, '
	  . 'tickets.insert - 3, tickets.delete - 3',
	'names, user_id and order: rolled back transaction and savepoint left out');

is($node->safe_psql('postgres', q{
SELECT properties FROM ticket_events WHERE event_name = 'tickets.insert' AND properties->>'id' = '1'}),
	'{"id": 1, "body": "printer", "status": "open", "user_id": "u1", "priority": 1}',
	'insert: properties are the new row, typed');
is($node->safe_psql('postgres', q{
SELECT properties::text || ' ' || (context - 'position')::text FROM ticket_events WHERE event_name = 'tickets.delete' AND properties->>'id' = '2'}),
	'{"id": 2} {"key": {"id": 2}, "source": "public.tickets", "operation": "delete"}',
	'delete: properties and context carry the old key');
is($node->safe_psql('postgres', q{
SELECT (context->'changed')::text || ' ' || (properties->>'status') || ' ' || (properties->>'priority')
FROM ticket_events WHERE event_name = 'tickets.update' AND properties->>'id' = '10'}),
	'["status", "priority"] urgent 5', 'update: changed columns in context, new row in properties');
is($node->safe_psql('postgres', q{
SELECT properties->>'body' FROM ticket_events WHERE event_name = 'tickets.update' AND properties->>'id' = '200'}),
	'kept', 'the update rolled back to the savepoint is not an event');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE occurred_at IS DISTINCT FROM
                               pg_xact_commit_timestamp(xid(split_part(context->>'position', '/', 1)::xid8)))
       || '/' || count(*)
FROM ticket_events}), '0/10', 'occurred_at is the commit time of the source transaction');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE event_id <> stream._capture_event_id(1, context->>'position')
                           OR substr(event_id::text, 15, 1) <> '5')
       || '/' || count(DISTINCT event_id)
FROM ticket_events}), '0/10', 'event ids: distinct version 5 UUIDs of the capture and the change position');
is($node->safe_psql('postgres', q{
SELECT count(DISTINCT split_part(context->>'position', '/', 1)) FROM ticket_events
WHERE properties->>'id' = '10' OR (properties->>'id' = '2' AND event_name = 'tickets.delete')}),
	'1', 'the changes of the multi-statement transaction share its transaction');

sub oracle_equal
{
	my ($what) = @_;
	my $q = q{SELECT event_name, user_id, count(*) AS n, max(occurred_at) AS last FROM ticket_events GROUP BY 1, 2};
	my $diff = $node->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM (($q) EXCEPT ALL TABLE ticket_counts) a) || '/' || "
		  . "(SELECT count(*) FROM (TABLE ticket_counts EXCEPT ALL ($q)) b)");
	is($diff, '0/0', "$what: the aggregate over the captured stream equals its oracle");
}
oracle_equal('after the first changes');

# a contract rejection quarantines; the source's transaction commits
$node->safe_psql('postgres', q{
SELECT stream.define_contract('ticket_events', 'tickets.insert',
    '{"type": "object", "properties": {"priority": {"type": "integer", "minimum": 1}}}');
SELECT stream.define_contract('ticket_events', 'tickets.update', '{"type": "object"}');
SELECT stream.define_contract('ticket_events', 'tickets.delete', '{"type": "object"}');
SELECT stream.set_policy('ticket_events', on_violation => 'reject');
});
my ($ret, $out, $err) = $node->psql('postgres',
	q{INSERT INTO tickets (id, user_id, priority) VALUES (300, 'u300', 0), (301, 'u301', 2)});
is($ret, 0, 'an insert the stream\'s contract refuses still commits in the source');
caught_up('contract');
is($node->safe_psql('postgres', q{
SELECT (SELECT string_agg(properties->>'id', ',') FROM ticket_events_quarantine) || ' ' ||
       (SELECT string_agg(properties->>'id', ',') FROM ticket_events WHERE properties->>'id' IN ('300', '301')) || ' ' ||
       (SELECT captured || '/' || quarantined || '/' || status FROM stream.captures)}),
	'300 301 11/1/running', 'the refused event is in the quarantine, the other in the stream, the capture runs');
like($node->safe_psql('postgres', q{SELECT errors::text FROM ticket_events_quarantine}),
	qr{/priority}, 'the quarantined event carries the contract\'s error');

# crashes while pgbench changes the table
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM audit');
CaptureTest::crash_rounds($node, CaptureTest::changes_script($node), 3);
caught_up('after the crashes');
my ($audit, $events, $distinct, $quarantined) = split /\|/, $node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM audit), count(*), count(DISTINCT event_id),
       (SELECT count(*) FROM ticket_events_quarantine)
FROM ticket_events WHERE event_name LIKE 'tickets.%'});
cmp_ok($audit, '>', $before + 100, "the crash rounds changed the table ($audit changes)");
is($events + $quarantined, $audit, 'after crashes: one event per committed change (none lost)');
is($distinct, $events, 'after crashes: no event written twice (the stream has no dedup)');
is($node->safe_psql('postgres', q{
SELECT string_agg(op || ':' || n, ',' ORDER BY op) FROM (SELECT op, count(*) n FROM audit GROUP BY op) a}),
	$node->safe_psql('postgres', q{
SELECT string_agg(op || ':' || n, ',' ORDER BY op) FROM (
  SELECT split_part(event_name, '.', 2) AS op, count(*) n FROM
    (SELECT event_name FROM ticket_events UNION ALL SELECT event_name FROM ticket_events_quarantine) e GROUP BY 1) a}),
	'after crashes: inserts, updates and deletes each counted once');
oracle_equal('after the crashes');

# ---------- privileges ----------
$t->mark_log;
$node->safe_psql('postgres', q{
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE mallory LOGIN;
GRANT USAGE ON SCHEMA stream TO alice, bob, mallory;
GRANT CREATE ON SCHEMA public TO alice, bob, mallory;
SET ROLE alice;
SELECT stream.create_stream('alice_events', dedup_window => '1 day');
CREATE TABLE alice_orders (id int PRIMARY KEY, customer text, amount numeric, secret text);
CREATE TABLE alice_private (id int PRIMARY KEY, v text);
GRANT SELECT ON alice_orders TO mallory;
RESET ROLE;
SET ROLE bob;
CREATE TABLE bob_orders (id int PRIMARY KEY, amount numeric);
RESET ROLE;
});
$t->refused('mallory', q{SELECT stream.capture('alice_private', stream => 'alice_events')}, '42501',
	'a table the caller cannot SELECT is refused');
$t->refused('mallory', q{SELECT stream.capture('alice_orders', stream => 'alice_events')}, '42501',
	'SELECT without TRIGGER (or ownership) on the table is refused');
$t->refused('bob', q{SELECT stream.capture('bob_orders', stream => 'alice_events')}, '42501',
	'a stream the caller may not INSERT into is refused');
$t->refused('mallory', q{INSERT INTO stream.captures (source, stream, event_prefix, key_columns, owner, start_lsn)
	VALUES ('alice_private', 'alice_events', 'x', '{id}', 'alice', '0/0')}, '42501',
	'the catalog cannot be written directly');
$t->refused('mallory', q{SELECT stream._priv_capture('alice', 'alice_private', 'alice_events', NULL, NULL)}, '42501',
	'the catalog writer cannot be called directly (to forge the caller)');
$t->refused('mallory', q{INSERT INTO stream.capture_log (capture_id) VALUES (1)}, '42501',
	'the queue cannot be written directly');
$t->refused('mallory', q{SELECT stream._capture_drain()}, '42501', 'the drain is not for PUBLIC');
$t->succeeds('alice', q{SELECT stream.capture('alice_orders', stream => 'alice_events', columns => '{id,customer,amount}', user_id => 'customer')},
	'the owner of table and stream captures');
$t->refused('mallory', q{SELECT stream.uncapture('alice_orders')}, '42501', 'another role cannot uncapture');
$t->refused('mallory', q{SELECT stream.resume_capture('alice_orders')}, '42501', 'another role cannot resume it');
is($t->query('mallory', q{SELECT count(*) FROM stream.captures WHERE source = 'alice_orders'::regclass}), '1',
	'a role that may read the table sees its capture');
is($t->query('bob', q{SELECT count(*) FROM stream.captures WHERE source = 'alice_orders'::regclass}), '0',
	'a role that may not read the table does not see its capture');
caught_up('alice live') if $mode eq 'logical';
$node->poll_query_until('postgres',
	q{SELECT applied_lsn IS NOT NULL FROM stream.captures WHERE source = 'alice_orders'::regclass})
  if $mode eq 'logical';
$t->succeeds('alice', q{INSERT INTO alice_orders VALUES (1, 'c1', 10, 's1')}, 'alice writes her table');
caught_up('alice');
is($node->safe_psql('postgres', q{SELECT properties::text || ' ' || user_id FROM alice_events}),
	'{"id": 1, "amount": 10, "customer": "c1"} c1', 'columns => only the named columns; user_id from its column');

# the owner loses INSERT on the stream: that capture stops, the table and the others go on
$node->safe_psql('postgres', q{
CREATE ROLE carol LOGIN; GRANT USAGE ON SCHEMA stream TO carol; GRANT CREATE ON SCHEMA public TO carol;
SET ROLE alice; GRANT INSERT ON alice_events TO carol; RESET ROLE;
SET ROLE carol; CREATE TABLE carol_t (id int PRIMARY KEY, v text); RESET ROLE;
});
$t->succeeds('carol', q{SELECT stream.capture('carol_t', stream => 'alice_events')}, 'a producer of the stream captures its own table');
$node->poll_query_until('postgres',
	q{SELECT applied_lsn IS NOT NULL FROM stream.captures WHERE source = 'carol_t'::regclass})
  if $mode eq 'logical';
$node->safe_psql('postgres', q{SET ROLE alice; REVOKE INSERT ON alice_events FROM carol; RESET ROLE});
$t->succeeds('carol', q{INSERT INTO carol_t VALUES (1, 'a'), (2, 'b')}, 'the source still commits');
$t->succeeds('alice', q{INSERT INTO alice_orders VALUES (2, 'c2', 20, 's2')}, 'the other capture\'s table too');
if ($mode eq 'queue')
{
	$node->safe_psql('postgres', 'SELECT stream._capture_drain()');
}
$node->poll_query_until('postgres',
	q{SELECT status = 'error' FROM stream.captures WHERE source = 'carol_t'::regclass})
  or diag('capture of carol_t never stopped');
like($node->safe_psql('postgres', q{SELECT last_error FROM stream.captures WHERE source = 'carol_t'::regclass}),
	qr/INSERT|permission/, 'a capture whose owner lost INSERT stops with the reason');
caught_up('after the revoke');
is($node->safe_psql('postgres', q{SELECT string_agg(event_name, ',' ORDER BY properties->>'id') FROM alice_events}),
	'alice_orders.insert,alice_orders.insert', 'the other capture went on; nothing of carol\'s was written');
$node->safe_psql('postgres', q{SET ROLE alice; GRANT INSERT ON alice_events TO carol; RESET ROLE});
$t->succeeds('carol', q{SELECT stream.resume_capture('carol_t')}, 'the owner resumes it');
caught_up('after resume');
is($node->safe_psql('postgres', q{SELECT count(*) FROM alice_events WHERE event_name = 'carol_t.insert'}), '2',
	'resumed: the changes made while it was stopped are written, once');

# quoted identifiers
$node->safe_psql('postgres', q{
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Weird ""T""" ("Id" int PRIMARY KEY, "Val ue" text);
SELECT stream.capture('"My Schema"."Weird ""T"""', stream => 'ticket_events', user_id => 'Val ue');
});
$node->poll_query_until('postgres',
	q{SELECT bool_and(applied_lsn IS NOT NULL) FROM stream.captures})
  if $mode eq 'logical';
$node->safe_psql('postgres', q{INSERT INTO "My Schema"."Weird ""T""" VALUES (1, 'x')});
caught_up('quoted');
is($node->safe_psql('postgres', q{
SELECT event_name || ' ' || user_id || ' ' || properties::text || ' ' || (context->>'source')
FROM ticket_events WHERE event_name LIKE 'Weird%'}),
	'Weird "T".insert x {"Id": 1, "Val ue": "x"} "My Schema"."Weird ""T"""', 'quoted names are kept whole');

# uncapture stops it; a dropped table takes its capture along
my $n = $node->safe_psql('postgres', q{SELECT count(*) FROM ticket_events WHERE event_name LIKE 'tickets.%'});
$node->safe_psql('postgres', q{SELECT stream.uncapture('tickets')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tickets'::regclass AND tgname = 'stream_events_capture'}),
	'0', 'uncapture drops the trigger');
$node->safe_psql('postgres', q{INSERT INTO tickets (id) VALUES (5000); UPDATE tickets SET body = 'z' WHERE id = 1});
caught_up('uncaptured');
sleep 2;
is($node->safe_psql('postgres', q{SELECT count(*) FROM ticket_events WHERE event_name LIKE 'tickets.%'}),
	$n, 'after uncapture the table\'s changes are no events');
$node->safe_psql('postgres', q{DROP TABLE "My Schema"."Weird ""T"""});
is($node->safe_psql('postgres', q{SELECT count(*) FROM stream.captures WHERE source::text LIKE '%Weird%'}),
	'0', 'a dropped table takes its capture along');
oracle_equal('at the end');
ok(!$t->crashes_in_log, 'no backend crashed');

$node->stop;
done_testing();
