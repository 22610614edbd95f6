# Activations (stream.on_event): a LISTEN client receives NOTIFYs for
# committed matching events only (never for rolled-back ones), an oversized
# payload is sent as its id, every NOTIFY is the outbox row exactly as
# row_to_json writes it (the worker builds it in C; with a trigger on the
# outbox it inserts by SQL instead, and the trigger runs), firing is exactly once across pg_ctl -m
# immediate (rows in stream.activations = matching events), and a consumer
# catches up with stream.consume/stream.ack after a disconnect.
#
# Runs in both consumer modes: logical decoding, and the ingest queue when
# make test runs it again with STREAM_EVENTS_TEST_MODE=queue (StreamEventsTest.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $node = StreamEventsTest::new_node('activations');
# a zone with a half-hour offset: the NOTIFY's timestamps are written in the
# worker's TimeZone, as row_to_json writes them
$node->append_conf('postgresql.conf', "timezone = 'America/St_Johns'");
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION stream_events');
$node->safe_psql('postgres', q{SELECT stream.create_stream('clicks')});
$node->safe_psql('postgres',
	q{SELECT stream.on_event('buy', 'clicks', $$event_name = 'buy'$$, channel => 'buys', notify => 'full')});
$node->safe_psql('postgres', q{SELECT stream.flush(timeout => '60 s')});

# -- a LISTEN client -------------------------------------------------------
my $listener = StreamEventsTest::listener($node, undef, 'buys');

$node->safe_psql('postgres', q{
INSERT INTO clicks (event_name, user_id) VALUES ('buy', 'u1'), ('view', 'u1');
BEGIN; INSERT INTO clicks (event_name, user_id) VALUES ('buy', 'rolled_back'); ROLLBACK;
INSERT INTO clicks (event_name, user_id) VALUES ('buy', 'u2');
INSERT INTO clicks (event_name, user_id, properties)
    VALUES ('buy', 'u_big', jsonb_build_object('blob', repeat('x', 9000)));
});
$node->safe_psql('postgres', q{SELECT stream.flush()});
my @notes = StreamEventsTest::notifications($listener, 'buys');
is(scalar(@notes), 3, 'three NOTIFYs: the committed matching events only');
ok((grep { /"key":"u1"/ } @notes) && (grep { /"key":"u2"/ } @notes),
	'NOTIFY payload: the activation row with the event');
ok(!(grep { /rolled_back/ } @notes), 'a rolled-back event never fires');
my $big_id = $node->safe_psql('postgres',
	q{SELECT id FROM stream.activations WHERE key = 'u_big'});
ok((grep { $_ eq qq({"id": $big_id, "truncated": true}) } @notes),
	'a payload over the NOTIFY limit is sent as its id');
StreamEventsTest::close_listener($listener);

# -- the NOTIFY is the row as row_to_json writes it --------------------------
# Each payload, compared with row_to_json of the row it names (in the
# worker's TimeZone): keys and texts that need escaping, non-ASCII, a NULL
# key, nested JSON, timestamps with fractions and a half-hour offset.  For
# the batched activation (the worker's rows), an immediate one (the
# producer's) and an on_absence one (the worker's timers, with due_at and
# late); once as they write the rows themselves, once with a trigger on the
# outbox, when they insert them by SQL (and the trigger must see every
# row).
sub notes_match_rows
{
	my ($label) = @_;
	my $before = $node->safe_psql('postgres', q{SELECT coalesce(max(id), 0) FROM stream.activations});
	my $l = StreamEventsTest::listener($node, undef, 'buys');
	$node->safe_psql('postgres', q{
INSERT INTO clicks (event_name, user_id, session_id, occurred_at, properties) VALUES
  ('buy', 'q"uote\back\slash', E'tab\there', '2026-07-01 12:34:56.789012+00',
   '{"nested": {"a": [1, 2.50, null, true], "é": "ünïcødé ✓"}, "s": "line\nbreak"}'),
  ('buy', NULL, NULL, '2026-01-15 00:00:00+00', '{}'),
  ('view', 'not_a_buy', NULL, now(), '{}'),
  ('buy', 'plain', 's1', '1999-12-31 23:59:59.5+00', '{"price": 12.3400}');
});
	$node->safe_psql('postgres', q{SELECT stream.flush()});
	# the two buys with a user_id open a timer each, due a second later
	is(StreamEventsTest::poll_until($node, 'postgres',
			qq{SELECT count(*) FROM stream.activations WHERE activation = 'no_pay' AND id > $before}, '2'),
		'2', "$label: the on_absence timers fired");
	is($node->safe_psql('postgres',
			qq{SELECT count(*) FROM stream.activations WHERE activation = 'no_pay' AND id > $before
			   AND due_at = received_at + interval '1 second' AND fired_at >= due_at
			   AND late = (fired_at - due_at > interval '1 second')}),
		'2', "$label: each timer's row has its deadline as due_at");
	my @got = StreamEventsTest::notifications($l, 'buys');
	StreamEventsTest::close_listener($l);
	is(scalar(@got), 8, "$label: one NOTIFY per matching event and activation, and per timer");
	my $same = 0;
	for my $note (@got)
	{
		my ($id) = $note =~ /^\{"id":(\d+),/;
		if (!defined $id) { diag("$label: NOTIFY without an id: $note"); next; }
		my $row = $node->safe_psql('postgres',
			"SET TimeZone = 'America/St_Johns'; SELECT row_to_json(a)::text FROM stream.activations a WHERE id = $id");
		if ($row eq $note) { $same++ }
		else { diag("$label: NOTIFY $note\n  row_to_json $row") }
	}
	is($same, 8, "$label: each NOTIFY equals row_to_json of its row");
	return;
}
$node->safe_psql('postgres',
	q{SELECT stream.on_event('buy_now', 'clicks', $$event_name = 'buy'$$, channel => 'buys', delivery => 'immediate', notify => 'full')});
$node->safe_psql('postgres',
	q{SELECT stream.on_absence('no_pay', 'clicks', started_by => $$event_name = 'buy'$$,
	    cancelled_by => $$event_name = 'pay'$$, within => '1 second', key => 'user_id',
	    channel => 'buys', notify => 'full')});
$node->safe_psql('postgres', q{SELECT stream.flush()});
notes_match_rows('written by the worker and by the producer');
$node->safe_psql('postgres', q{
CREATE TABLE outbox_seen (id bigint);
CREATE FUNCTION outbox_seen() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO public.outbox_seen VALUES (NEW.id); RETURN NEW; END$$;
CREATE TRIGGER outbox_seen AFTER INSERT ON stream.activations
  FOR EACH ROW EXECUTE FUNCTION outbox_seen();
});
notes_match_rows('with a trigger on the outbox');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox_seen}), '8',
	'the trigger on the outbox saw every row the worker and the producer inserted');
$node->safe_psql('postgres', q{DROP TRIGGER outbox_seen ON stream.activations});
$node->safe_psql('postgres', q{SELECT stream.drop_activation('buy_now')});
$node->safe_psql('postgres', q{SELECT stream.drop_activation('no_pay')});

# -- exactly once across crashes ------------------------------------------
my $script = $node->basedir . '/buys.sql';
open my $fh, '>', $script or die;
print $fh q{INSERT INTO clicks (event_name, user_id)
SELECT CASE WHEN i % 3 = 0 THEN 'view' ELSE 'buy' END, 'u' || (i % 17)
FROM generate_series(1, 20) i;
};
close $fh;
for my $round (1 .. 3)
{
	my @producers;
	for my $p (1 .. 4)
	{
		push @producers,
		  IPC::Run::start(
			[ 'pgbench', '-n', '-T', '5', '-c', '1', '-f', $script, '-d',
			  $node->connstr('postgres') ],
			'>', \my $o, '2>', \my $e);
	}
	usleep(1_500_000 + 300_000 * $round);
	$node->stop('immediate');
	$_->finish for @producers;
	$node->start;
}
$node->safe_psql('postgres', q{SELECT stream.flush(timeout => '120 s')});
my $events = $node->safe_psql('postgres',
	q{SELECT count(*) FROM clicks WHERE event_name = 'buy'});
my $fired = $node->safe_psql('postgres',
	q{SELECT count(*) || '/' || count(DISTINCT event_id) FROM stream.activations WHERE activation = 'buy'});
my $missing = $node->safe_psql('postgres',
	q{SELECT count(*) FROM clicks c WHERE event_name = 'buy'
	  AND NOT EXISTS (SELECT 1 FROM stream.activations a WHERE a.event_id = c.event_id)});
ok($events > 100, "producers committed $events matching events across three crashes");
is($fired, "$events/$events", 'every committed matching event fired exactly once');
is($missing, '0', 'no matching event without its activation');
is($node->safe_psql('postgres',
		q{SELECT d.fired = (SELECT count(*) FROM stream.activations a WHERE a.activation = 'buy')
		  FROM stream.activation_defs d WHERE d.name = 'buy'}),
	't', 'the activation\'s fired count equals its outbox rows across the crashes');

# -- the worker and a transaction that holds the activation's row ------------
# The worker records its position in the activation's row before it writes
# the firings: it waits for a transaction that has the row locked, and then
# fires (that transaction rolled back) or finds the activation dropped and
# fires nothing.  A second activation on the stream goes on either way.
$node->safe_psql('postgres', q{
SELECT stream.on_event('held', 'clicks', $$event_name = 'hold'$$, channel => 'held');
SELECT stream.on_event('other', 'clicks', $$event_name = 'hold'$$, channel => 'other');
SELECT stream.flush(timeout => '60 s');
});
for my $end ('ROLLBACK', 'COMMIT')
{
	my ($hin, $hout, $herr) = ('', '', '');
	my $holder = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$hin, '>', \$hout, '2>', \$herr,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$hin .= "BEGIN;\nSELECT 1 FROM stream.activation_defs WHERE name = 'held' FOR UPDATE;\nSELECT 'locked';\n";
	$holder->pump until $hout =~ /locked/;
	my $before = $node->safe_psql('postgres',
		q{SELECT count(*) FROM stream.activations WHERE activation = 'held'});
	my $fired_before = $node->safe_psql('postgres',
		q{SELECT coalesce(sum(fired), 0) FROM stream.activation_defs WHERE name = 'held'});
	$node->safe_psql('postgres', qq{INSERT INTO clicks (event_name, user_id) VALUES ('hold', 'h_$end')});
	is(StreamEventsTest::poll_until($node, 'postgres',
			q{SELECT count(*) FROM pg_stat_activity
			  WHERE backend_type = 'stream_events worker' AND wait_event_type = 'Lock'}, '1'),
		'1', "$end: the worker waits for the transaction that holds the activation's row");
	$hin .= "SELECT stream.drop_activation('held');\n" if $end eq 'COMMIT';
	$hin .= "$end;\nSELECT 'ended';\n";
	$holder->pump until $hout =~ /ended/;
	$hin .= "\\q\n";
	$holder->finish;
	$node->safe_psql('postgres', q{SELECT stream.flush(timeout => '60 s')});
	my $after = $node->safe_psql('postgres',
		q{SELECT count(*) FROM stream.activations WHERE activation = 'held'});
	if ($end eq 'ROLLBACK')
	{
		is($after, $before + 1, 'ROLLBACK: then the worker fires the held event once');
		is($node->safe_psql('postgres',
				q{SELECT fired FROM stream.activation_defs WHERE name = 'held'}),
			$fired_before + 1, 'ROLLBACK: and counts it');
	}
	else
	{
		is($after, $before, 'COMMIT of drop_activation: the worker finds the activation gone and fires nothing');
		is($node->safe_psql('postgres',
				q{SELECT count(*) FROM stream.activation_defs WHERE name = 'held'}), '0',
			'COMMIT: the activation is dropped');
	}
	is($node->safe_psql('postgres',
			qq{SELECT count(*) FROM stream.activations WHERE activation = 'other' AND key = 'h_$end'}),
		'1', "$end: the other activation fired the event");
	is($node->safe_psql('postgres',
			q{SELECT count(*) FROM stream.activation_defs WHERE last_error IS NOT NULL}),
		'0', "$end: no activation recorded an error");
}
$node->safe_psql('postgres', q{SELECT stream.drop_activation('other')});

# -- consume / ack: catch-up after a disconnect -------------------------------
my $first = $node->safe_psql('postgres',
	q{SELECT string_agg(id::text, ',' ORDER BY id) FROM stream.consume('mailer', 'buys', 5)});
my @ids = split /,/, $first;
is(scalar(@ids), 5, 'consume returns up to max rows');
$node->safe_psql('postgres', "SELECT stream.ack('mailer', $ids[2])");
# a new session, as after a disconnect: the unacknowledged rows come again
my $again = $node->safe_psql('postgres',
	q{SELECT string_agg(id::text, ',' ORDER BY id) FROM stream.consume('mailer', 'buys', 2)});
is($again, "$ids[3],$ids[4]", 'after a reconnect, consume resumes after the last ack');
my %seen;
my $dups = 0;
for (;;)
{
	my $batch = $node->safe_psql('postgres',
		q{SELECT string_agg(id::text, ',' ORDER BY id) FROM stream.consume('mailer', 'buys', 500)});
	last if $batch eq '';
	my @b = split /,/, $batch;
	$dups += exists $seen{$_} for @b;
	$seen{$_} = 1 for @b;
	$node->safe_psql('postgres', "SELECT stream.ack('mailer', $b[-1])");
}
my $total = $node->safe_psql('postgres',
	q{SELECT count(*) FROM stream.activations WHERE channel = 'buys' AND id > } . $ids[2]);
is(scalar(keys %seen) . "/$dups", "$total/0", 'an acknowledging consumer gets every activation once');
is($node->safe_psql('postgres',
	q{SELECT pending FROM stream.activation_stats WHERE activation = 'buy'}), '0',
	'activation_stats: nothing pending once acknowledged');

$node->stop;
done_testing();
