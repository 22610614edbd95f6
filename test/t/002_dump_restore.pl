# pg_dump -Fc of a database with streams, and pg_restore into a new database:
# catalog rows and options, every event with its received_at, partitions,
# triggers, append-only, dedup of already stored events, new events.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init(allows_streaming => 'logical');
# A long naptime: the worker runs once when the extension is created and then
# leaves the default partition alone, so that the dump holds events there.
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'stream_events'
wal_level = logical
max_connections = 20
max_worker_processes = 32
stream_events.naptime = 3600
# events of 1999 and 2001 get partitions of their own (the default window
# of late partitions is 100 partitions: docs/streams.md)
stream_events.max_partitions_behind = 100000
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', 'CREATE EXTENSION stream_events');
ok( $node->poll_query_until(
		'src',
		q{SELECT runs >= 1 FROM stream.worker_status() WHERE datname = 'src'}),
	'the worker of src has made its first run');

$node->safe_psql(
	'src', q{
	CREATE SCHEMA shop;
	SELECT stream.create_stream('clicks');
	SELECT stream.create_stream('shop.orders', partition_interval => '7 days',
	                            retention => '400 days', dedup_window => '30 days');

	-- recent events
	INSERT INTO clicks (event_id, event_name, occurred_at, user_id, properties, context)
	SELECT md5('click' || i)::uuid, 'page_view', now() - make_interval(mins => i),
	       'u' || (i % 7), jsonb_build_object('n', i), '{"page": {"path": "/"}}'
	FROM generate_series(1, 100) i;
	INSERT INTO shop.orders (event_id, event_name, occurred_at, user_id, properties)
	SELECT md5('order' || i)::uuid, 'purchase', now() - make_interval(hours => i),
	       'u' || (i % 5), jsonb_build_object('price', i * 1.5)
	FROM generate_series(1, 40) i;

	-- far past: adopted into a partition of its own before the dump
	INSERT INTO clicks (event_id, event_name, occurred_at)
	SELECT md5('adopted' || i)::uuid, 'page_view', timestamptz '2001-06-01 12:00+00'
	FROM generate_series(1, 10) i;
	SELECT count(*) FROM stream.maintain('clicks');

	-- received_at of the original ingest, distinct from any later one
	SELECT pg_sleep(0.01);
});

# Rows in a default partition are adopted by the worker (stream.maintain) as
# soon as it runs; attaching the new partition needs an ACCESS EXCLUSIVE lock
# on the default partition.  A session holding ROW EXCLUSIVE on the default
# partitions lets inserts and pg_dump through but makes every adoption time
# out (the worker uses lock_timeout), so the dump holds rows in the default
# partitions.
my ($hin, $hout, $herr) = ('', '', '');
my $htimer = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
my $holder = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('src'), '-f', '-' ],
	'<', \$hin, '>', \$hout, '2>', \$herr, $htimer);
$hin .= q{BEGIN;
LOCK TABLE clicks_default, shop.orders_default IN ROW EXCLUSIVE MODE;
SELECT 'locked';
};
$holder->pump until $hout =~ /locked/ || $htimer->is_expired;
like($hout, qr/locked/, 'a session holds the default partitions against adoption');

$node->safe_psql(
	'src', q{
	INSERT INTO clicks (event_id, event_name, occurred_at)
	SELECT md5('default' || i)::uuid, 'page_view', timestamptz '1999-01-01 00:00+00'
	FROM generate_series(1, 5) i;
	INSERT INTO shop.orders (event_id, event_name, occurred_at)
	SELECT md5('old_order' || i)::uuid, 'purchase', now() - interval '100 days'
	FROM generate_series(1, 3) i;
});

is( $node->safe_psql(
		'src',
		q{SELECT (SELECT count(*) FROM clicks_default) || '/' ||
		         (SELECT count(*) FROM shop.orders_default)}),
	'5/3',
	'src has events in the default partitions at dump time');
is( $node->safe_psql(
		'src', q{SELECT count(*) FROM ONLY clicks_p20010601}),
	'10',
	'src has an adopted far-past partition');

# What must survive, per database.  Event rows are compared without their
# partition first: the worker of the restored database may adopt rows of the
# default partition at any moment (DDL wakes it up), which moves them.
my %check = (
	streams => q{SELECT stream_id, relid::text, partition_interval, retention,
	                    dedup_window, created_at
	             FROM stream.streams ORDER BY stream_id},
	clicks => q{SELECT event_id, event_name, occurred_at, user_id, anonymous_id,
	                   session_id, properties, context
	            FROM clicks ORDER BY event_id},
	orders => q{SELECT event_id, event_name, occurred_at, user_id, anonymous_id,
	                   session_id, properties, context
	            FROM shop.orders ORDER BY event_id},
	received_at => q{SELECT event_id, received_at FROM clicks
	                 UNION ALL SELECT event_id, received_at FROM shop.orders
	                 ORDER BY 1},
	dedup_keys => q{SELECT s.relid::text, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM stream.%I', 'dedup_keys_' || s.stream_id), false, true, '')))[1]::text
	                FROM stream.streams s ORDER BY 1},
	comments => q{SELECT obj_description('clicks'::regclass, 'pg_class'),
	                     obj_description('shop.orders'::regclass, 'pg_class')},
);
# compared once stream.maintain() has run in both databases
my %layout = (
	partitions => q{SELECT i.inhparent::regclass::text, c.oid::regclass::text,
	                       pg_get_expr(c.relpartbound, c.oid)
	                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
	                WHERE i.inhparent IN ('clicks'::regclass, 'shop.orders'::regclass)
	                ORDER BY 1, 2},
	placement => q{SELECT event_id, tableoid::regclass::text FROM clicks
	               UNION ALL SELECT event_id, tableoid::regclass::text FROM shop.orders
	               ORDER BY 1},
	triggers => q{SELECT t.tgrelid::regclass::text, t.tgname, t.tgfoid::regproc, t.tgtype,
	                     t.tgenabled, t.tgparentid <> 0
	              FROM pg_trigger t
	              WHERE t.tgrelid IN (SELECT 'clicks'::regclass UNION ALL
	                                  SELECT 'shop.orders'::regclass UNION ALL
	                                  SELECT inhrelid FROM pg_inherits
	                                  WHERE inhparent IN ('clicks'::regclass, 'shop.orders'::regclass))
	              ORDER BY 1, 2},
);
my %src;
$src{$_} = $node->safe_psql('src', $check{$_}) for keys %check;
is( $node->safe_psql(
		'src', q{SELECT (SELECT count(*) FROM clicks) || '/' || (SELECT count(*) FROM shop.orders)}),
	'115/43',
	'src has 115 clicks and 43 orders');
like($src{dedup_keys}, qr/^clicks\|115\nshop\.orders\|43$/,
	'src has a dedup key per event');

my $dump = $node->basedir . '/src.dump';
my ($out, $err) = ('', '');
my @conn = ('-h', $node->host, '-p', $node->port);
ok(IPC::Run::run([ 'pg_dump', @conn, '-Fc', '-f', $dump, '-d', 'src' ],
		'>', \$out, '2>', \$err),
	'pg_dump -Fc succeeds')
  or diag($err);
is($err, '', 'pg_dump prints no warning');

# release the default partitions of src
$hin .= "COMMIT;\nSELECT 'released';\n";
$holder->pump until $hout =~ /released/ || $htimer->is_expired;
like($hout, qr/released/, 'the holding session commits');
$hin .= "\\q\n";
$holder->finish;

# the common path: an empty database, and a dump that creates the extension
$node->safe_psql('postgres', 'CREATE DATABASE restored');
($out, $err) = ('', '');
my $restore_ok =
  IPC::Run::run([ 'pg_restore', @conn, '-d', 'restored', $dump ],
	'>', \$out, '2>', \$err);
ok($restore_ok, 'pg_restore succeeds') or diag($err);
unlike($err, qr/error|ERROR/, 'pg_restore reports no error') or diag($err);

my %dst;
$dst{$_} = $node->safe_psql('restored', $check{$_}) for keys %check;

is($dst{streams}, $src{streams},
	'stream.streams rows and options survive (ids, intervals, retention, dedup_window, created_at)');
like($dst{streams}, qr/shop\.orders\|7 days\|400 days\|30 days/,
	'the schema-qualified stream keeps its options');
is($dst{clicks}, $src{clicks}, 'every click event survives unchanged');
is($dst{orders}, $src{orders}, 'every order survives unchanged');
is($dst{received_at}, $src{received_at}, 'every event keeps its received_at');
is($dst{comments}, $src{comments}, 'the comments survive');
# (the ingest trigger does not fire while pg_restore loads the data: pg_dump
# creates triggers after it; the keys must come with the dump)
is($dst{dedup_keys}, $src{dedup_keys},
	'the restored database has a dedup key for every restored event');

# the same partition layout, once both databases are maintained
$node->safe_psql('src',      'SELECT count(*) FROM stream.maintain()');
$node->safe_psql('restored', 'SELECT count(*) FROM stream.maintain()');
is($node->safe_psql('src', 'SELECT count(*) FROM clicks_default'),
	'0', 'src: the default partition of clicks is adopted after the dump');
my (%srcl, %dstl);
$srcl{$_} = $node->safe_psql('src',      $layout{$_}) for keys %layout;
$dstl{$_} = $node->safe_psql('restored', $layout{$_}) for keys %layout;
is($dstl{partitions}, $srcl{partitions}, 'the same partitions with the same bounds');
is($dstl{placement},  $srcl{placement},  'every event is in the same partition');
is($dstl{triggers},   $srcl{triggers},   'the same triggers on streams and partitions');
like($dstl{triggers}, qr/clicks_p20010601\|stream_events_ingest\|/,
	'the far-past partition restored from the dump has the ingest trigger');
like($dstl{triggers}, qr/clicks_p19990101\|stream_events_ingest\|/,
	'the partition adopted after the restore has the ingest trigger');
like($dstl{triggers}, qr/clicks_default\|stream_events_no_truncate\|/,
	'the default partition refuses TRUNCATE');

is( $node->safe_psql(
		'restored',
		q{SELECT count(*) FROM pg_extension WHERE extname = 'stream_events'}),
	'1',
	'the restored database has the extension');

# append-only still holds
my ($ret, $o, $e);
($o, $e) = ('', '');
$ret = $node->psql('restored', q{UPDATE clicks SET event_name = 'x'},
	stdout => \$o, stderr => \$e);
isnt($ret, 0, 'UPDATE of a restored stream fails');
like($e, qr/UPDATE is not allowed on stream "clicks"/, 'UPDATE is refused as append-only');
($o, $e) = ('', '');
$ret = $node->psql('restored', q{DELETE FROM shop.orders},
	stdout => \$o, stderr => \$e);
like($e, qr/DELETE is not allowed on stream "orders"/, 'DELETE is refused as append-only');
($o, $e) = ('', '');
$ret = $node->psql('restored', q{TRUNCATE clicks_default},
	stdout => \$o, stderr => \$e);
like($e, qr/TRUNCATE is not allowed on stream/, 'TRUNCATE of a restored partition is refused');

# retries of stored events are dropped, in every kind of partition
is( $node->safe_psql(
		'restored', q{
	WITH ins AS (
	    INSERT INTO clicks (event_id, event_name, occurred_at)
	    VALUES (md5('click1')::uuid, 'page_view', now()),
	           (md5('adopted1')::uuid, 'page_view', '2001-06-01 12:00+00'),
	           (md5('default1')::uuid, 'page_view', '1999-01-01 00:00+00')
	    RETURNING 1)
	SELECT count(*) FROM ins}),
	'0',
	'retries of restored click events are dropped as duplicates');
is( $node->safe_psql(
		'restored', q{
	SELECT accepted || '/' || duplicates FROM stream.ingest('shop.orders',
	  jsonb_build_array(jsonb_build_object('event_id', md5('order7')::uuid, 'event_name', 'purchase'),
	                    jsonb_build_object('event_id', md5('old_order2')::uuid, 'event_name', 'purchase')))}),
	'0/2',
	'stream.ingest drops retries of restored orders');
is( $node->safe_psql(
		'restored',
		q{SELECT duplicates FROM stream.stats WHERE stream = 'clicks'}),
	'3',
	'stream.stats of the restored database counts the dropped retries');

# new events are accepted
is( $node->safe_psql(
		'restored', q{
	WITH ins AS (
	    INSERT INTO clicks (event_name, user_id) VALUES ('page_view', 'new1'), ('page_view', 'new2')
	    RETURNING received_at)
	SELECT count(*) FROM ins WHERE received_at = statement_timestamp()}),
	'2',
	'new events are accepted, with received_at set by the server');
is( $node->safe_psql(
		'restored', q{
	SELECT accepted FROM stream.ingest('shop.orders',
	  '[{"type": "track", "event": "purchase", "userId": "u9", "messageId": "m-after-restore"}]')}),
	'1',
	'stream.ingest accepts a new event');
is( $node->safe_psql(
		'restored',
		q{SELECT count(*) FROM clicks WHERE user_id IN ('new1', 'new2')}),
	'2', 'the new click events are stored');
is($node->safe_psql('restored', 'SELECT count(*) FROM clicks'),
	'117', 'clicks has 115 restored + 2 new events, no retry stored');
is($node->safe_psql('restored', 'SELECT count(*) FROM shop.orders'),
	'44', 'orders has 43 restored + 1 new event, no retry stored');

# the restored database gets its own worker
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'stream_events worker' AND datname = 'restored'}),
	'the restored database has a worker');

$node->stop;
done_testing();
