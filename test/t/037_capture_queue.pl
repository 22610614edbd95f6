# Capture in queue mode (wal_level = replica: no decoding), the path of
# src/capture/queue.c on its own, without the worker: the capture trigger
# appends each change to stream.capture_log in the source's transaction,
# stream._capture_drain() (what the worker does each loop in queue mode,
# capture_drain) writes them to the stream.  036_capture.pl covers the
# whole path with the worker in whichever mode the node runs
# (STREAM_EVENTS_TEST_MODE=queue).
#   - changes, a rolled back transaction and savepoint: only committed
#     changes are queued; events as in logical mode (changed columns from
#     OLD/NEW); occurred_at the commit time (track_commit_timestamp);
#   - a drain is one transaction: events and the deletion of their log rows
#     commit together (a failing drain leaves both);
#   - a contract rejection quarantines at the drain, the source committed;
#   - crashes while pgbench changes the table: every committed change is
#     one event;
#   - an owner who lost INSERT stops that capture alone, rows kept; resumed,
#     nothing lost.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use StreamEventsTest;
use Test::More;
use CaptureTest;

# no worker (the launcher takes the only background worker slot): the test
# drains by hand, so that what is queued and when it is written are its own
my $node = StreamEventsTest::new_node('capture_queue', q{wal_level = replica},
	q{stream_events.consumer = 'queue'}, q{max_worker_processes = 1},
	q{track_commit_timestamp = on}, q{max_connections = 30});
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION stream_events;
SELECT stream.create_stream('ticket_events', dedup_window => NULL);
CREATE TABLE tickets (id int PRIMARY KEY, user_id text, status text NOT NULL DEFAULT 'open',
                      priority int NOT NULL DEFAULT 1, body text);
CREATE TABLE audit (n bigserial, op text);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (op) VALUES (lower(TG_OP)); RETURN NULL; END $$;
CREATE TRIGGER a_audit AFTER INSERT OR UPDATE OR DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION audit_row();
SELECT stream.capture('tickets', stream => 'ticket_events', user_id => 'user_id');
});
is($node->safe_psql('postgres', 'SELECT stream._capture_mode()'), 'queue',
	'wal_level = replica: captures go through the queue');

$node->safe_psql('postgres', q{
INSERT INTO tickets (id, user_id, body) VALUES (1, 'u1', 'printer'), (2, 'u2', 'login');
UPDATE tickets SET status = 'resolved', priority = 3 WHERE id = 1;
BEGIN;
DELETE FROM tickets WHERE id = 2;
INSERT INTO tickets (id, user_id) VALUES (100, 'u100');
ROLLBACK;
BEGIN;
INSERT INTO tickets (id, user_id) VALUES (200, 'u200');
SAVEPOINT s;
INSERT INTO tickets (id, user_id) VALUES (201, 'u201');
ROLLBACK TO s;
DELETE FROM tickets WHERE id = 2;
COMMIT;
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM stream.capture_log'), '5',
	'the committed changes are queued, the rolled back ones are not');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ticket_events'), '0', 'nothing is in the stream before a drain');

# a drain that fails writes nothing and keeps the queue (one transaction)
my ($ret, $out, $err) = $node->psql('postgres', q{
BEGIN; SELECT stream._capture_drain(); SELECT 1/0; COMMIT;});
is($node->safe_psql('postgres', 'SELECT count(*) FROM stream.capture_log') . '/'
	  . $node->safe_psql('postgres', 'SELECT count(*) FROM ticket_events'),
	'5/0', 'a drain rolled back leaves the queue and the stream as they were');

is($node->safe_psql('postgres', 'SELECT stream._capture_drain()'), '5', 'the drain writes 5 events');
is($node->safe_psql('postgres', 'SELECT count(*) FROM stream.capture_log'), '0', '... and empties the queue');
is($node->safe_psql('postgres', 'SELECT stream._capture_drain()'), '0', 'a second drain writes nothing');

is($node->safe_psql('postgres', q{
SELECT string_agg(event_name || ' ' || coalesce(user_id, '-') || ' ' || (properties->>'id'), ', '
                  ORDER BY event_name, properties->>'id')
FROM ticket_events}),
	'tickets.delete u2 2, tickets.insert u1 1, tickets.insert u2 2, tickets.insert u200 200, tickets.update u1 1',
	'names, user_id, properties: rolled back transaction and savepoint left out');
is($node->safe_psql('postgres', q{
SELECT (context->'changed')::text || ' ' || properties::text FROM ticket_events WHERE event_name = 'tickets.update'}),
	'["status", "priority"] {"id": 1, "body": "printer", "status": "resolved", "user_id": "u1", "priority": 3}',
	'update: changed columns from OLD and NEW, the new row');
is($node->safe_psql('postgres', q{
SELECT properties::text || ' ' || (context - 'position')::text FROM ticket_events WHERE event_name = 'tickets.delete'}),
	'{"id": 2} {"key": {"id": 2}, "source": "public.tickets", "operation": "delete"}',
	'delete: the old key');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE occurred_at IS DISTINCT FROM
                               pg_xact_commit_timestamp(xid(split_part(context->>'position', '/', 1)::xid8)))
       || '/' || count(*) FILTER (WHERE event_id <> stream._capture_event_id(1, context->>'position'))
FROM ticket_events}), '0/0', 'occurred_at is the commit time; ids are the v5 of the position');

# contract rejection: quarantined at the drain
$node->safe_psql('postgres', q{
SELECT stream.define_contract('ticket_events', 'tickets.insert',
    '{"type": "object", "properties": {"priority": {"type": "integer", "minimum": 1}}}');
SELECT stream.set_policy('ticket_events', on_violation => 'reject', on_unplanned => 'allow');
});
($ret, $out, $err) = $node->psql('postgres',
	q{INSERT INTO tickets (id, user_id, priority) VALUES (300, 'u300', 0), (301, 'u301', 2)});
is($ret, 0, 'an insert the contract refuses still commits in the source');
$node->safe_psql('postgres', 'SELECT stream._capture_drain()');
is($node->safe_psql('postgres', q{
SELECT (SELECT string_agg(properties->>'id', ',') FROM ticket_events_quarantine) || ' ' ||
       (SELECT string_agg(properties->>'id', ',') FROM ticket_events WHERE properties->>'id' IN ('300', '301')) || ' ' ||
       (SELECT captured || '/' || quarantined || '/' || status FROM stream.captures)}),
	'300 301 6/1/running', 'the refused event is quarantined, the other written, the capture runs');

# crashes while pgbench changes the table, draining meanwhile
CaptureTest::crash_rounds($node, CaptureTest::changes_script($node), 3,
	[
		'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'postgres',
		'-c', q{SELECT stream._capture_drain(), pg_sleep(0.3)},
		'-c', q{SELECT stream._capture_drain(), pg_sleep(0.3)},
		'-c', q{SELECT stream._capture_drain()}
	]);
$node->safe_psql('postgres', 'SELECT stream._capture_drain()');
my ($audit, $events, $distinct, $quarantined, $queued) = split /\|/, $node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM audit), count(*), count(DISTINCT event_id),
       (SELECT count(*) FROM ticket_events_quarantine), (SELECT count(*) FROM stream.capture_log)
FROM ticket_events});
cmp_ok($audit, '>', 100, "the crash rounds changed the table ($audit changes)");
is("$events+$quarantined/$queued", ($audit - $quarantined) . "+$quarantined/0",
	'after crashes: one event per committed change, the queue drained');
is($distinct, $events, 'after crashes: no event written twice (the stream has no dedup)');

# an owner who lost INSERT: that capture stops at the drain, rows kept
$node->safe_psql('postgres', q{
CREATE ROLE carol LOGIN; GRANT USAGE ON SCHEMA stream TO carol; GRANT CREATE ON SCHEMA public TO carol;
GRANT INSERT ON ticket_events TO carol;
SET ROLE carol; CREATE TABLE carol_t (id int PRIMARY KEY, v text);
SELECT stream.capture('carol_t', stream => 'ticket_events'); RESET ROLE;
REVOKE INSERT ON ticket_events FROM carol;
SET ROLE carol; INSERT INTO carol_t VALUES (1, 'a'), (2, 'b'); RESET ROLE;
INSERT INTO tickets (id) VALUES (9000);
});
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM ticket_events');
$node->psql('postgres', 'SELECT stream._capture_drain()');
is($node->safe_psql('postgres', q{
SELECT status || ' ' || (last_error LIKE '%has no INSERT privilege%')::text || ' ' ||
       (SELECT count(*) FROM stream.capture_log l WHERE l.capture_id = k.capture_id)
FROM stream.captures k WHERE source = 'carol_t'::regclass}),
	'error true 2', 'the capture whose owner lost INSERT stops, its queued rows kept');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ticket_events') - $before, 1,
	'the other capture was drained');
$node->safe_psql('postgres', q{GRANT INSERT ON ticket_events TO carol});
$node->safe_psql('postgres', q{SET ROLE carol; SELECT stream.resume_capture('carol_t'); RESET ROLE});
$node->safe_psql('postgres', 'SELECT stream._capture_drain()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ticket_events WHERE event_name = 'carol_t.insert'}),
	'2', 'resumed: its queued changes are written, once');

# the function attached again under another name queues nothing twice
$node->safe_psql('postgres', q{
CREATE TRIGGER zz_again AFTER INSERT OR UPDATE OR DELETE ON tickets FOR EACH ROW EXECUTE FUNCTION stream._capture_trigger();
INSERT INTO tickets (id) VALUES (8000);});
is($node->safe_psql('postgres', q{SELECT count(*) FROM stream.capture_log}), '1',
	'only the capture\'s own trigger queues a change');
$node->safe_psql('postgres', q{DROP TRIGGER zz_again ON tickets; SELECT stream._capture_drain()});

# uncapture drops the trigger and the queued rows
$node->safe_psql('postgres', q{INSERT INTO tickets (id) VALUES (9001); SELECT stream.uncapture('tickets')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM stream.capture_log}), '0',
	'uncapture drops what it queued');
$node->safe_psql('postgres', q{INSERT INTO tickets (id) VALUES (9002)});
is($node->safe_psql('postgres', q{SELECT count(*) FROM stream.capture_log}), '0',
	'after uncapture nothing is queued');

$node->stop;
done_testing();
