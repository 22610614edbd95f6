# on_absence and on_threshold on a live server:
# - absence timers fire once per key when they run out, never for a key
#   whose cancelled_by event came in time; a later start restarts the timer;
# - timers survive pg_ctl -m immediate: those that ran out while the server
#   was down fire at start-up, marked late; a cancelling event committed just
#   before the crash still cancels; timers survive a clean restart too;
# - thresholds are edge-triggered on a live aggregate: once per rise, again
#   after the condition became false and true again;
# - on_event cooldown on a live server: one firing per key per interval;
# - the opens and closes of one batch folded as if done one by one; batched
#   firings in commit order across activations, a cooldown between them;
# - quiet definitions record their position while another stream is busy.
#
# Runs in both consumer modes: logical decoding, and the ingest queue when
# make test runs it again with STREAM_EVENTS_TEST_MODE=queue (StreamEventsTest.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = StreamEventsTest::new_node('absence');
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# waits until the query returns the expected value (or times out)
sub wait_for
{
	my ($query, $expected, $seconds) = @_;
	my $got;
	for (1 .. ($seconds // 30) * 10)
	{
		$got = sql($query);
		return $got if $got eq $expected;
		usleep(100_000);
	}
	return $got;
}

sql('CREATE EXTENSION stream_events');
sql(q{SELECT stream.create_stream('clicks')});
sql(q{SELECT stream.on_absence('abandon', 'clicks',
        started_by => $$event_name = 'add_to_cart'$$,
        cancelled_by => $$event_name = 'purchase'$$,
        within => '2 seconds', key => 'user_id', channel => 'recovery')});
sql(q{SELECT stream.flush(timeout => '60 s')});

# -- fires once per key, cancelled by B, restarted by a later A ---------------
sql(q{INSERT INTO clicks (event_name, user_id)
      SELECT 'add_to_cart', 'u' || i FROM generate_series(1, 5) i});
sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('purchase', 'u2')});
usleep(1_000_000);
sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('add_to_cart', 'u3')});
is(wait_for(q{SELECT string_agg(key, ',' ORDER BY key) FROM stream.activations
              WHERE activation = 'abandon'}, 'u1,u3,u4,u5'),
	'u1,u3,u4,u5', 'absence fired for every key without a purchase, not for u2');
usleep(1_000_000);
is(sql(q{SELECT count(*) || '/' || count(DISTINCT key) FROM stream.activations
         WHERE activation = 'abandon'}), '4/4', 'each key fired once');
is(sql(q{SELECT count(*) FROM stream.activations a
         WHERE activation = 'abandon' AND key = 'u3'
           AND due_at = (SELECT max(received_at) FROM clicks WHERE user_id = 'u3') + interval '2 seconds'}),
	'1', "u3's second add_to_cart restarted its timer");
is(sql(q{SELECT count(*) FROM stream.activations
         WHERE activation = 'abandon' AND fired_at < due_at}),
	'0', 'no timer fired before its deadline');
# how late they fired is a benchmark figure (bench/activation.sh), not a test
my $delay = sql(q{SELECT max(extract(epoch FROM fired_at - due_at)) FROM stream.activations
                  WHERE activation = 'abandon'});
note("fired at most $delay s after the deadline");
is(sql('SELECT count(*) FROM stream.absence_timers'), '0', 'no timer left open');

# -- durable: pg_ctl -m immediate with timers open --------------------------
# Its own activation, started by another event, with a deadline 6 s away:
# the timers must still be open at the crash however long the flush before
# it takes (abandon's 2 s once ran out during a 2 s flush, and the timers
# fired before the crash), and run out while the server is down (8 s).
sql(q{SELECT stream.on_absence('abandon_crash', 'clicks',
        started_by => $$event_name = 'save_cart'$$,
        cancelled_by => $$event_name = 'purchase'$$,
        within => '6 seconds', key => 'user_id', channel => 'recovery')});
sql(q{SELECT stream.flush(timeout => '60 s')});
my $crash_timers = q{SELECT count(*) FROM stream.absence_timers t
                     JOIN stream.activation_defs d USING (act_id) WHERE d.name = 'abandon_crash'};
sql(q{INSERT INTO clicks (event_name, user_id)
      SELECT 'save_cart', 'c' || i FROM generate_series(1, 10) i});
my $flush_started = Time::HiRes::time();
sql(q{SELECT stream.flush()});
note(sprintf('flush after the ten events took %.3f s', Time::HiRes::time() - $flush_started));
is(sql($crash_timers), '10', 'ten timers open');
# c1's purchase commits just before the crash: it must still cancel
sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('purchase', 'c1')});
$node->stop('immediate');
usleep(8_000_000);    # the timers run out (6 s) while the server is down
$node->start;
is(wait_for(q{SELECT count(*) FROM stream.activations WHERE activation = 'abandon_crash'},
		'9'),
	'9', 'after the crash, the timers that ran out fired');
is(sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'abandon_crash' AND key = 'c1'}),
	'0', 'a purchase committed before the crash cancelled its timer');
is(sql(q{SELECT bool_and(late) FROM stream.activations WHERE activation = 'abandon_crash'}),
	't', 'timers that ran out while the server was down are marked late');
usleep(500_000);
is(sql(q{SELECT count(*) - count(DISTINCT key) FROM stream.activations
         WHERE activation IN ('abandon', 'abandon_crash')}),
	'0', 'no duplicate firing after the crash');
is(sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'abandon' AND key LIKE 'c%'}),
	'0', 'abandon, which save_cart does not start, fired for none of them');
sql(q{SELECT stream.drop_activation('abandon_crash')});

# -- a clean restart with timers not yet due -------------------------------------
sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('add_to_cart', 'r1')});
sql(q{SELECT stream.flush()});
$node->restart;
is(wait_for(q{SELECT count(*) FROM stream.activations WHERE activation = 'abandon' AND key = 'r1'}, '1'),
	'1', 'a timer open across a restart fires after it');

# -- thresholds: edge-triggered on a live aggregate -------------------------
sql(q{SELECT stream.create_aggregate('basket', $$SELECT user_id,
        avg((properties->>'price')::numeric) AS avg_price, count(*) AS items
        FROM clicks WHERE event_name = 'add_to_cart' GROUP BY 1$$)});
sql(q{SELECT stream.on_threshold('pricey', 'basket', 'avg_price > 50', channel => 'ops')});
sql(q{SELECT stream.flush()});
my @steps = (100, 300, 0, 0, 0, 0, 0, 0, 200);    # avg 100, 200 .. 50 (not above), 66.7
my $fires = 0;
my $avg_sum = 0;
my $n = 0;
my $above = 0;
for my $price (@steps)
{
	sql(qq{INSERT INTO clicks (event_name, user_id, properties)
           VALUES ('add_to_cart', 't1', '{"price": $price}')});
	sql(q{SELECT stream.flush()});
	$avg_sum += $price;
	$n++;
	my $now_above = ($avg_sum / $n) > 50 ? 1 : 0;
	$fires++ if $now_above && !$above;
	$above = $now_above;
}
is(sql(q{SELECT count(*) FROM stream.activations WHERE activation = 'pricey'}),
	$fires, "threshold fired once per rise ($fires rises over " . scalar(@steps) . ' changes)');
is(sql(q{SELECT payload->>'items' FROM stream.activations WHERE activation = 'pricey' ORDER BY id DESC LIMIT 1}),
	'9', 'the payload is the group as the view shows it at the rise');

# -- a threshold defined while its aggregate still backfills: the groups
# that already satisfy it do not fire; a group that rises later does
sql(q{INSERT INTO clicks (event_name, user_id) SELECT 'visit', 'v' || (i % 50) FROM generate_series(1, 5000) i});
sql(q{SELECT stream.create_aggregate('visits', $$SELECT user_id, count(*) AS n FROM clicks
        WHERE event_name = 'visit' GROUP BY 1$$)});
sql(q{SELECT stream.on_threshold('regular', 'visits', 'n >= 10')});
sql(q{SELECT stream.flush()});
is(sql(q{SELECT count(*) FROM stream.threshold_state s JOIN stream.activation_defs d USING (act_id)
         WHERE d.name = 'regular'}), '50', 'groups above the threshold at its creation are noted');
sql(q{INSERT INTO clicks (event_name, user_id) SELECT 'visit', 'newbie' FROM generate_series(1, 12)});
sql(q{SELECT stream.flush()});
is(sql(q{SELECT string_agg(key, ',') FROM stream.activations WHERE activation = 'regular'}),
	'["newbie"]', 'only a group that rose after the creation fired');

# -- cooldown on a live server ----------------------------------------------------
sql(q{SELECT stream.on_event('cart_ping', 'clicks', $$event_name = 'ping'$$,
        cooldown => '1 hour', key => 'user_id')});
sql(q{SELECT stream.flush()});
sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('ping', 'p1')}) for 1 .. 3;
sql(q{INSERT INTO clicks (event_name, user_id) VALUES ('ping', 'p2')});
sql(q{SELECT stream.flush()});
is(sql(q{SELECT string_agg(key, ',' ORDER BY key) FROM stream.activations WHERE activation = 'cart_ping'}),
	'p1,p2', 'cooldown: one firing per key per interval');

# -- one batch: the operations on a key are folded as if done one by one ---
# (timers.c).  One INSERT is one apply; ids give the order; f6..f8 have a
# timer open from an earlier transaction.
sql(q{SELECT stream.on_absence('fold', 'clicks', started_by => $$event_name = 'open'$$,
        cancelled_by => $$event_name = 'close'$$, within => '1 hour', key => 'user_id')});
sql(q{SELECT stream.flush()});
sql(q{INSERT INTO clicks (event_id, event_name, user_id) VALUES
        ('00000000-0000-0000-0000-000000000061', 'open', 'f6'),
        ('00000000-0000-0000-0000-000000000071', 'open', 'f7'),
        ('00000000-0000-0000-0000-000000000081', 'open', 'f8')});
sql(q{SELECT stream.flush()});
sql(q{INSERT INTO clicks (event_id, event_name, user_id) VALUES
        ('00000000-0000-0000-0000-000000000011', 'open', 'f1'),
        ('00000000-0000-0000-0000-000000000012', 'open', 'f1'),
        ('00000000-0000-0000-0000-000000000021', 'open', 'f2'),
        ('00000000-0000-0000-0000-000000000022', 'close', 'f2'),
        ('00000000-0000-0000-0000-000000000031', 'close', 'f3'),
        ('00000000-0000-0000-0000-000000000032', 'open', 'f3'),
        ('00000000-0000-0000-0000-000000000041', 'open', 'f4'),
        ('00000000-0000-0000-0000-000000000042', 'close', 'f4'),
        ('00000000-0000-0000-0000-000000000043', 'open', 'f4'),
        ('00000000-0000-0000-0000-000000000051', 'close', 'f5'),
        ('00000000-0000-0000-0000-000000000052', 'close', 'f5'),
        ('00000000-0000-0000-0000-000000000062', 'close', 'f6'),
        ('00000000-0000-0000-0000-000000000063', 'open', 'f6'),
        ('00000000-0000-0000-0000-000000000072', 'open', 'f7'),
        ('00000000-0000-0000-0000-000000000073', 'close', 'f7'),
        ('00000000-0000-0000-0000-000000000082', 'close', 'f8'),
        ('00000000-0000-0000-0000-000000000083', 'close', 'f8')});
sql(q{SELECT stream.flush()});
# the oracle: a key's timer is its last open when no close follows it
my $fold_oracle = sql(q{SELECT string_agg(user_id || '=' || right(event_id::text, 2), ',' ORDER BY user_id)
    FROM (SELECT DISTINCT ON (user_id) user_id, event_id, event_name FROM clicks
          WHERE user_id LIKE 'f_' AND event_name IN ('open', 'close')
          ORDER BY user_id, event_id DESC) last WHERE event_name = 'open'});
is($fold_oracle, 'f1=12,f3=32,f4=43,f6=63', 'the oracle of the folded batch');
is(sql(q{SELECT string_agg(t.key || '=' || right(t.event_id::text, 2), ',' ORDER BY t.key)
         FROM stream.absence_timers t JOIN stream.activation_defs d USING (act_id) WHERE d.name = 'fold'}),
	$fold_oracle, 'one batch of opens and closes leaves the timers the events one by one would');
is(sql(q{SELECT count(*) FROM stream.absence_timers t JOIN stream.activation_defs d USING (act_id)
         JOIN clicks c ON c.event_id = t.event_id
         WHERE d.name = 'fold' AND t.deadline = c.received_at + interval '1 hour'}),
	'4', "each timer's deadline is its opening event's received_at + within");

# absence_timers has no foreign key (sql/modules/70_activations.sql): the
# drop functions delete the timers, and a timer without its activation goes
# unfired when due
my $fold_id = sql(q{SELECT act_id FROM stream.activation_defs WHERE name = 'fold'});
# (inserted first: the drop makes the worker read the timers' deadlines again)
sql(q{INSERT INTO stream.absence_timers (act_id, key, deadline, payload)
      VALUES (-1, 'orphan', now(), '{}')});
sql(q{SELECT stream.drop_activation('fold')});
is(sql(qq{SELECT count(*) FROM stream.absence_timers WHERE act_id = $fold_id}), '0',
	'drop_activation deletes its timers');
is(wait_for(q{SELECT count(*) FROM stream.absence_timers WHERE act_id = -1}, '0'), '0',
	'a timer without its activation is deleted when due');
is(sql(q{SELECT count(*) FROM stream.activations WHERE key = 'orphan'}), '0', '... and fires nothing');

# a parked activation's timers still fire when due (the worker has not
# loaded it: its name and channel come from the catalog, and the NOTIFY
# says no more than the id)
sql(q{SELECT stream.on_absence('parked_abs', 'clicks', started_by => $$event_name = 'park_open'$$,
        cancelled_by => $$event_name = 'park_close'$$, within => '2 seconds',
        key => $$user_id || (1 / (properties->>'d')::int)::text$$,
        channel => 'parked_ch', notify => 'full', on_error => 'stop')});
sql(q{SELECT stream.flush()});
my $parked_l = StreamEventsTest::listener($node, undef, 'parked_ch');
sql(q{INSERT INTO clicks (event_name, user_id, properties) VALUES ('park_open', 'p', '{"d": 1}')});
sql(q{INSERT INTO clicks (event_name, user_id, properties) VALUES ('park_open', 'q', '{"d": 0}')});
is(wait_for(q{SELECT status FROM stream.activation_defs WHERE name = 'parked_abs'}, 'error'), 'error',
	'an error in the key parks the activation (on_error => stop)');
is(wait_for(q{SELECT count(*) FROM stream.activations WHERE activation = 'parked_abs'}, '1'), '1',
	"the parked activation's open timer fires when due");
is(sql(q{SELECT key || ' ' || channel || ' ' || (due_at = (SELECT received_at FROM clicks
           WHERE event_name = 'park_open' AND user_id = 'p') + interval '2 seconds')
         FROM stream.activations WHERE activation = 'parked_abs'}), 'p1 parked_ch true',
	'... with its key, its channel from the catalog and its deadline');
my $parked_id = sql(q{SELECT id FROM stream.activations WHERE activation = 'parked_abs'});
is(join(' ', StreamEventsTest::notifications($parked_l, 'parked_ch')), qq({"id": $parked_id}),
	'... and a NOTIFY of its id only');
StreamEventsTest::close_listener($parked_l);
sql(q{SELECT stream.drop_activation('parked_abs')});

# -- batched firings keep commit order across activations, a cooldown in between
sql(q{SELECT stream.on_event('every_order', 'clicks', $$event_name = 'order'$$)});
sql(q{SELECT stream.on_event('order_per_user', 'clicks', $$event_name = 'order'$$,
        cooldown => '1 hour', key => 'user_id')});
sql(q{SELECT stream.flush()});
sql(q{INSERT INTO clicks (event_id, event_name, user_id)
      SELECT ('00000000-0000-0000-0001-' || lpad(i::text, 12, '0'))::uuid, 'order', 'o' || (i % 7)
      FROM generate_series(1, 2500) i});
sql(q{SELECT stream.flush()});
is(sql(q{SELECT count(*) FILTER (WHERE activation = 'every_order') || '/' ||
                count(*) FILTER (WHERE activation = 'order_per_user')
         FROM stream.activations WHERE activation IN ('every_order', 'order_per_user')}),
	'2500/7', 'one firing per order, one per user within the cooldown');
is(sql(q{SELECT string_agg(name || '=' || fired, ',' ORDER BY name) FROM stream.activation_defs
         WHERE name IN ('every_order', 'order_per_user')}),
	'every_order=2500,order_per_user=7', "the definitions' fired counters: what fired, not what was queued");
is(sql(q{SELECT count(*) FROM (
           SELECT event_id, lag(event_id) OVER (ORDER BY id) AS prev FROM stream.activations
           WHERE activation IN ('every_order', 'order_per_user')) o
         WHERE prev > event_id}),
	'0', 'outbox ids follow the events\' commit order, across both activations');

# -- a quiet definition keeps up while another stream is busy ----------------
# Definitions with nothing to write are recorded every ten seconds (apply.c);
# the busy stream's applies must not postpone that, or the quiet ones (and
# the slot, or the ingest queue) would stay where they were.
sql(q{SELECT stream.create_stream('busy')});
sql(q{SELECT stream.create_aggregate('busy_n', $$SELECT event_name, count(*) AS n FROM busy GROUP BY 1$$)});
sql(q{SELECT stream.flush()});
my $quiet_from = sql(q{SELECT min(applied_lsn) FROM stream.activation_status WHERE stream = 'clicks'});
my $t0 = time;
while (time - $t0 < 13)
{
	sql(q{INSERT INTO busy (event_name) SELECT 'tick' FROM generate_series(1, 20)});
	usleep(50_000);
}
is(sql(qq{SELECT count(*) FROM stream.activation_status
          WHERE stream = 'clicks' AND applied_lsn > '$quiet_from'}),
	sql(q{SELECT count(*) FROM stream.activation_status WHERE stream = 'clicks'}),
	'quiet activations recorded their position while another stream kept the worker busy');
is(sql(qq{SELECT count(*) FROM stream.aggregates
          WHERE stream = 'clicks' AND applied_lsn > '$quiet_from'}),
	sql(q{SELECT count(*) FROM stream.aggregates WHERE stream = 'clicks'}),
	'so did quiet aggregates');

# dropping a stream deletes the timers of its activations
sql(q{SELECT stream.create_stream('short_lived')});
sql(q{SELECT stream.on_absence('short_wait', 'short_lived', started_by => 'true',
        cancelled_by => 'false', within => '1 hour', key => 'user_id')});
sql(q{SELECT stream.flush()});
sql(q{INSERT INTO short_lived (event_name, user_id) VALUES ('x', 's1'), ('x', 's2')});
sql(q{SELECT stream.flush()});
my $short_id = sql(q{SELECT act_id FROM stream.activation_defs WHERE name = 'short_wait'});
is(sql(qq{SELECT count(*) FROM stream.absence_timers WHERE act_id = $short_id}), '2', 'two timers open');
sql(q{DROP TABLE short_lived});
is(sql(qq{SELECT count(*) FROM stream.absence_timers WHERE act_id = $short_id}), '0',
	'DROP TABLE of the stream deleted its activations\' timers');

$node->stop;
done_testing();
