# A slot that cannot advance (here: a long transaction holds the consumer's
# decoding back) must not keep WAL silently: the worker warns, naming the
# slot and the size, once stream_events.slot_warning_size is passed, and
# stream.aggregates keeps working; after the transaction ends the slot
# advances and the aggregate is still exact.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = StreamEventsTest::new_node('slot_warning', q{stream_events.slot_warning_size = 1});
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION stream_events;
SELECT stream.create_stream('clicks');
SELECT stream.create_aggregate('per_name',
  $$SELECT event_name, count(*) AS n FROM clicks GROUP BY 1$$);
SELECT stream.flush('per_name', '120 s');
});

# a transaction with an xid that stays open: decoding cannot move the
# slot's restart point past it
my ($in, $out, $err) = ('', '', '');
my $timer = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
my $h = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', '-' ],
	\$in, \$out, \$err, $timer);
$in .= "BEGIN; SELECT pg_current_xact_id() IS NOT NULL AS started;\n";
$h->pump until $out =~ /t/;
like($out, qr/t/, 'a long transaction holds an xid');

my $offset = -s $node->logfile;
# about 20 MB of WAL behind it
$node->safe_psql('postgres', q{
CREATE TABLE filler AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 20000) g;
INSERT INTO clicks (event_name, user_id) SELECT 'view', 'u' || g FROM generate_series(1, 100) g;
});
ok( $node->wait_for_log(
		qr/WARNING:  replication slot "stream_events_\d+" of the continuous aggregates holds \d+ MB of WAL/,
		$offset),
	'the worker warns that the slot holds WAL');

is($node->safe_psql('postgres', q{SELECT lag_bytes >= 0 FROM stream.aggregates}),
	't', 'stream.aggregates reports the lag');

# end the long transaction: everything is applied, exactly
$in .= "COMMIT;\n\\q\n";
$h->finish;
$node->safe_psql('postgres', q{SELECT stream.flush('per_name', '120 s')});
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
  (TABLE per_name EXCEPT SELECT event_name, count(*) FROM clicks GROUP BY 1)
  UNION ALL
  (SELECT event_name, count(*) FROM clicks GROUP BY 1 EXCEPT TABLE per_name)) d}),
	'0', 'the aggregate equals its defining query afterwards');

$node->stop;
done_testing();
